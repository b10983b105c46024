"""qnn_torch.experiments.cli: the command lines of the experiments and the MNIST jobs.

Tested on a small settings dataclass of its own: the spellings an option is accepted in,
lists and yes/no options, errors (exit status 2, naming the option) and the YAML of a
command line, which reruns it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from qnn_torch.config import SamplerConfig, check_int
from qnn_torch.experiments.cli import SAMPLER_SKIP, CommandLine, Parsed, check_device

SAMPLER = SamplerConfig(n_time=64, chains=4, sweeps=20)


@dataclass(frozen=True)
class Demo:
    """Settings of a demo command.

    Attributes:
        size_limit: An integer >= 1.
        rate: A number.
        names: Some words.
        quick: A yes/no option, off by default.
        pixel_shift: A yes/no option, on by default.
        out: An output folder.
    """

    size_limit: int = 3
    rate: float = 0.5
    names: tuple[str, ...] = ("a",)
    quick: bool = False
    pixel_shift: bool = True
    out: Path = Path("outputs/demo")

    def __post_init__(self) -> None:
        check_int("size_limit", self.size_limit, 1)


def command_line() -> CommandLine[Demo]:
    return CommandLine(
        Demo,
        "A demo command.",
        samplers={"sampler": (SAMPLER, "The demo's sampler")},
        renamed={
            "--old-size": ["--size_limit"],
            "--chains": ["--sampler.chains"],
            "--fast": ["--quick", "true"],
        },
    )


def parse(*argv: str) -> Parsed[Demo]:
    return command_line().parse(list(argv))


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error printed by parsing ``argv``, which must exit with status 2."""
    with pytest.raises(SystemExit) as exit_info:
        command_line().parse(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_defaults_are_the_dataclass_and_the_default_sampler() -> None:
    parsed = parse()
    assert parsed.settings == Demo()
    assert parsed.samplers == {"sampler": SAMPLER}


def test_dashed_and_underscore_spellings_are_the_same_option() -> None:
    expected = Demo(size_limit=5, pixel_shift=False)
    for argv in (
        ["--size_limit", "5", "--pixel_shift", "false"],
        ["--size-limit", "5", "--pixel-shift", "false"],
        ["--size-limit=5", "--pixel-shift=false"],
    ):
        assert parse(*argv).settings == expected, argv
    sampler = replace(SAMPLER, max_sweeps=100)
    assert parse("--sampler.max-sweeps", "100").samplers["sampler"] == sampler
    assert parse("--sampler.max_sweeps=100").samplers["sampler"] == sampler


def test_renamed_options_are_rewritten_with_their_values() -> None:
    assert parse("--old-size", "7").settings.size_limit == 7
    assert parse("--old-size=7").settings.size_limit == 7
    assert parse("--chains", "6").samplers["sampler"] == replace(SAMPLER, chains=6)
    assert parse("--chains=6").samplers["sampler"] == replace(SAMPLER, chains=6)
    assert parse("--fast").settings.quick is True


def test_list_options_take_plain_words_or_yaml() -> None:
    assert parse("--names", "x", "y", "--size_limit", "2").settings == Demo(
        names=("x", "y"), size_limit=2
    )
    assert parse("--names", "[x, y]").settings.names == ("x", "y")
    assert parse("--names", "x").settings.names == ("x",)
    assert parse("--names=[x, y]").settings.names == ("x", "y")
    assert parse("--names=x").settings.names == ("x",)
    # Plain words stay the strings they were typed as (YAML would read yes and null).
    assert parse("--names", "yes", "null", "a #b").settings.names == ("yes", "null", "a #b")
    # A negative number is a word of the list, not an option.
    assert command_line().modern(["--names", "-5", "x", "--quick"]) == [
        "--names", '[-5, "x"]', "--quick", "true",
    ]  # fmt: skip


def test_yes_no_options_may_stand_alone() -> None:
    assert parse("--quick").settings.quick is True
    assert parse("--quick", "--size_limit", "2").settings == Demo(quick=True, size_limit=2)
    assert parse("--quick", "false").settings.quick is False
    assert parse("--quick", "yes").settings.quick is True
    assert parse("--quick=false").settings.quick is False
    assert parse("--no_pixel_shift").settings.pixel_shift is False
    assert parse("--no-pixel-shift").settings.pixel_shift is False
    assert parse("--pixel_shift").settings.pixel_shift is True


def test_an_empty_path_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--out", ""], ["--out="]):
        assert "--out must not be empty" in error_of(argv, capsys)


def test_a_post_init_error_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    error = error_of(["--size_limit", "0"], capsys)
    assert "error: --size_limit must be an integer >= 1, got 0" in error
    assert "--size_limit must be an integer >= 1, got 0" in error_of(["--old-size", "0"], capsys)


def test_a_sampler_error_names_the_group_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    error = error_of(["--sampler.chains", "1"], capsys)
    assert "error: --sampler.chains must be an integer >= 2, got 1" in error
    assert "--sampler.chains must be an integer >= 2, got 1" in error_of(["--chains", "1"], capsys)
    error = error_of(["--sampler.max_sweeps", "3"], capsys)
    assert "--sampler.max_sweeps must be 0 (no extension) or >= sweeps=20, got 3" in error


def test_wrong_types_and_unknown_options_exit_with_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "size_limit" in error_of(["--size_limit", "many"], capsys)
    assert "--colour" in error_of(["--colour", "red"], capsys)
    for field in sorted(SAMPLER_SKIP):  # set by the command itself, not per group
        assert f"--sampler.{field}" in error_of([f"--sampler.{field}", "1"], capsys)


NON_DEFAULT = ["--size_limit", "7", "--rate", "0.25", "--names", "p", "q", "--quick"]
NON_DEFAULT += ["--no_pixel_shift", "--out", "elsewhere", "--sampler.chains", "6"]


def test_print_config_reruns_with_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        command_line().parse([*NON_DEFAULT, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["sampler"]["chains"] == 6
    config = tmp_path / "demo.yaml"
    config.write_text(printed)
    rerun = parse("--config", str(config))
    original = parse(*NON_DEFAULT)
    assert rerun.settings == original.settings
    assert rerun.settings == Demo(7, 0.25, ("p", "q"), True, False, Path("elsewhere"))
    assert rerun.samplers == original.samplers == {"sampler": replace(SAMPLER, chains=6)}
    assert parse("--config", str(config), "--size_limit", "2").settings.size_limit == 2


def test_parsed_config_round_trips(tmp_path: Path) -> None:
    parsed = parse(*NON_DEFAULT)
    assert "config" not in yaml.safe_load(parsed.config)  # a rerun does not chain files
    config = tmp_path / "config.yaml"
    config.write_text(parsed.config)
    rerun = parse("--config", str(config))
    assert rerun.settings == parsed.settings
    assert rerun.samplers == parsed.samplers
    assert rerun.config == parsed.config


def test_check_device_accepts_present_devices_only() -> None:
    check_device("--device", "cpu")
    with pytest.raises(ValueError, match="--device 'tpu9' is not an available device"):
        check_device("--device", "tpu9")
