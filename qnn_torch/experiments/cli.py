"""Command lines of the experiments and the MNIST jobs, built with jsonargparse.

A command line is a frozen settings dataclass, whose fields are the options (documented in
its ``Attributes:`` section, validated in its ``__post_init__``), plus named groups of
:class:`~qnn_torch.SamplerConfig` fields (``--sampler.chains 16``). Every command takes
``--config file.yaml`` and ``--print_config``, and ``--help`` shows the defaults. Options
are spelled as their fields (``--quantum_test_size``); the dashed spelling
(``--quantum-test-size``) is accepted too, and so are earlier spellings listed in
``renamed``. A list option takes YAML (``--only '[and, or]'``) or plain words
(``--only and or``, ``--only=and``; numbers stay numbers, other words strings); a yes/no
option may stand alone (``--quick``, ``--no_pixel_shift``,
or ``--quick false``). A bad value stops the command with exit status 2 and a message naming it,
before any work.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NoReturn, TypeVar

import torch
from jsonargparse import ActionConfigFile, ArgumentParser

from qnn_torch.config import SamplerConfig

Settings = TypeVar("Settings")

_YES_NO = {"true", "false", "yes", "no"}
SAMPLER_SKIP = frozenset({"seed", "device", "dtype", "progress"})
"""SamplerConfig fields that a command sets itself (from ``--seed``, ``--device``, …)."""


@dataclass(frozen=True)
class Parsed(Generic[Settings]):
    """A parsed command line: the settings, the sampler groups by name, and the whole
    resolved configuration as YAML (``--config`` of it reruns the command exactly)."""

    settings: Settings
    samplers: dict[str, SamplerConfig]
    config: str


class CommandLine(Generic[Settings]):
    """The jsonargparse command line of ``settings`` (a dataclass) and sampler groups.

    Args:
        settings: The frozen dataclass whose fields are the top-level options.
        description: The first line of ``--help``.
        samplers: ``{group: (default config, title)}``: each group holds the fields of
            :class:`~qnn_torch.SamplerConfig` but :data:`SAMPLER_SKIP`, as ``--group.field``,
            with the default config's values as defaults.
        renamed: Earlier option spellings and the arguments that replace them, e.g.
            ``{"--chains": ["--sampler.chains"], "--no-pixel-shift": ["--pixel_shift",
            "false"]}``.
    """

    def __init__(
        self,
        settings: type[Settings],
        description: str,
        *,
        samplers: Mapping[str, tuple[SamplerConfig, str]] | None = None,
        renamed: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.samplers = dict(samplers or {})
        self.renamed = {old: list(new) for old, new in (renamed or {}).items()}
        self.parser = ArgumentParser(description=description)
        self.parser.add_argument(
            "--config", action=ActionConfigFile, help="a YAML file of settings (see --print_config)"
        )
        self.parser.add_class_arguments(settings, as_group=False)
        for group, (default, title) in self.samplers.items():
            self.parser.add_class_arguments(
                SamplerConfig, group, default=default, skip=set(SAMPLER_SKIP), help=title
            )
        self.fields = {field.name for field in dataclasses.fields(settings)}
        self.options = {"--config", "--print_config", "--help"}
        self.options |= {f"--{name}" for name in self.fields}
        hints = typing.get_type_hints(settings)
        self.lists = {f"--{name}" for name in self.fields if _is_sequence(hints[name])}
        self.flags = {f"--{name}" for name in self.fields if hints[name] is bool}
        self.paths = {f"--{name}" for name in self.fields if _is_path(hints[name])}
        self.options |= {
            f"--{group}.{field.name}"
            for group in self.samplers
            for field in dataclasses.fields(SamplerConfig)
        }

    def modern(self, argv: Sequence[str]) -> list[str]:
        """``argv`` with dashed and earlier spellings of the options replaced, the plain
        words after a list option joined into one YAML list, and lone yes/no options given
        their value."""
        modern: list[str] = []
        tokens = list(argv)
        while tokens:
            token = tokens.pop(0)
            name, equals, value = token.partition("=")
            if name in self.renamed:
                new = list(self.renamed[name])
                if equals:
                    new[-1] += f"={value}"
                modern += new
                continue
            if name.startswith("--") and "--" + name[2:].replace("-", "_") in self.options:
                name = "--" + name[2:].replace("-", "_")
            negated = "--" + name[5:].replace("-", "_") if name[:5] in ("--no_", "--no-") else ""
            if negated in self.flags and not equals:
                modern += [negated, "false"]
                continue
            if name in self.flags and not equals:
                given = tokens and tokens[0].lower() in _YES_NO
                modern += [name, tokens.pop(0) if given else "true"]
                continue
            if name in self.paths and (value if equals else tokens[:1]) in ("", [""]):
                self.error(f"{name} must not be empty (write . for the working directory)")
            if name in self.lists:
                words = [value] if equals else []
                while not equals and tokens and not _is_option(tokens[0]):
                    words.append(tokens.pop(0))
                if len(words) == 1 and words[0].lstrip().startswith("["):
                    modern += [name, words[0]]  # a YAML list as given
                else:
                    modern += [name, "[" + ", ".join(map(_yaml_word, words)) + "]"]
                continue
            modern.append(name + equals + value)
        return modern

    def parse(self, argv: Sequence[str] | None = None) -> Parsed[Settings]:
        """Parse ``argv`` (default: the process's), validate it, and resolve the config.

        Any bad value exits with status 2 and a message naming the option.
        """
        argv = sys.argv[1:] if argv is None else list(argv)
        namespace = self.parser.parse_args(self.modern(argv))
        values = {field.name: namespace[field.name] for field in dataclasses.fields(self.settings)}
        try:
            settings = self.settings(**values)
        except ValueError as err:
            self.error(_named(str(err), "--", self.fields))
        samplers = {}
        sampler_fields = {field.name for field in dataclasses.fields(SamplerConfig)}
        for group, (default, _) in self.samplers.items():
            try:
                samplers[group] = dataclasses.replace(default, **namespace[group].as_dict())
            except ValueError as err:
                self.error(_named(str(err), f"--{group}.", sampler_fields))
        resolved = namespace.clone()
        del resolved["config"]
        return Parsed(settings, samplers, self.parser.dump(resolved, skip_unset=False))

    def error(self, message: str) -> NoReturn:
        """Print the usage and ``message`` and exit with status 2 (argparse's convention)."""
        self.parser.error(message)
        raise AssertionError("unreachable: ArgumentParser.error exits")  # for type checkers


def _named(message: str, prefix: str, fields: set[str]) -> str:
    """``message`` with its leading field name spelled as the option (``--epochs must…``)."""
    if message.split(" ", 1)[0] in fields:
        return prefix + message
    return message if prefix == "--" else f"{prefix.rstrip('.')}: {message}"


def check_device(name: str, device: str) -> None:
    """ValueError naming ``name`` unless ``device`` is a torch device present here."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # AssertionError: torch without CUDA
        raise ValueError(f"{name} {device!r} is not an available device ({err})") from None


def _is_option(token: str) -> bool:
    """Whether a command-line token names an option (``--x``, or ``-x`` but not ``-5``)."""
    if token.startswith("--"):
        return True
    try:
        float(token)
    except ValueError:
        return token.startswith("-")
    return False


def _yaml_word(word: str) -> str:
    """A plain word of a list option as YAML: numbers as they are, anything else quoted
    (so that ``yes``, ``null`` or ``a #b`` stay the strings they were typed as)."""
    try:
        float(word)
    except ValueError:
        return json.dumps(word)
    return word


def _is_path(hint: object) -> bool:
    """Whether a type hint is a Path, or an optional one."""
    return hint is Path or Path in typing.get_args(hint)


def _is_sequence(hint: object) -> bool:
    """Whether a type hint is a list or tuple, or an optional one."""
    if typing.get_origin(hint) in (list, tuple):
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and any(
        typing.get_origin(arg) in (list, tuple) for arg in typing.get_args(hint)
    )
