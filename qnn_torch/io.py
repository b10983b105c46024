"""Atomic file output for results that other tools read, and up-front checks of output paths.

Every output goes through :func:`atomic_path`: the file is written under a temporary name in
the same folder and moved into place with ``os.replace``, so a reader sees either the old
file or the complete new one, never a partial write.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path``, moved onto ``path`` when the block succeeds.

    Missing parent folders are created; on an exception the temporary file is removed and
    ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        temp.chmod(0o644)  # mkstemp creates 0600
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8: JSON, CSV, markdown) to ``path`` atomically."""
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def save_atomic(obj: object, path: str | Path) -> None:
    """``torch.save(obj, path)``, atomically."""
    with atomic_path(path) as temp:
        torch.save(obj, temp)


def _unwritable(folder: Path) -> str | None:
    """Why no file can be written in ``folder`` (created if missing), or None if one can."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is not a folder"
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            return None
    except OSError as err:
        return f"{existing} is not writable ({err.strerror})"


def check_output_folder(folder: str | Path, option: str = "--out") -> None:
    """Raise ValueError unless ``folder`` is, or can be created as, a writable folder.

    Creates nothing: the nearest existing ancestor must be a folder that accepts a file.
    """
    if reason := _unwritable(Path(folder)):
        raise ValueError(f"{option} {folder}: cannot write there: {reason}")


def check_output_file(path: str | Path, option: str = "--out") -> None:
    """Raise ValueError unless a file can be written at ``path`` (see check_output_folder)."""
    path = Path(path)
    reason = f"{path} is a folder" if path.is_dir() else _unwritable(path.parent)
    if reason:
        raise ValueError(f"{option} {path}: cannot write there: {reason}")


def clear_outputs(folder: str | Path, names: Iterable[str]) -> None:
    """Remove the outputs ``names`` (files or folders) of an earlier run from ``folder``.

    Called before a run starts its work, with its results file first in ``names`` and
    written last by the run: a run that is interrupted then never leaves outputs that look
    complete, nor new figures beside an earlier run's results. ``names`` are the run's own
    files and folders (e.g. ``logs/twin``), never a folder that other files may share.
    """
    for name in names:
        path = Path(folder) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
