"""Results computed once per lattice and kept on disk: exact tables, banks of paths.

A cached result is a dict of tensors and numbers, stored with the key it was built for
(lattice, settings and a hash of the code that builds it). Processes that need the same
result (DDP ranks, test workers) build it once: the first holds a file lock while it
builds, the others wait and then load its file.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch

from qnn_torch.io import save_atomic

Stored = dict[str, object]


def cache_dir() -> Path:
    """Where built results are kept: ``$QNN_TORCH_CACHE``, else ``$XDG_CACHE_HOME/qnn_torch``."""
    if "QNN_TORCH_CACHE" in os.environ:
        return Path(os.environ["QNN_TORCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qnn_torch"


def source_digest(*modules: ModuleType) -> str:
    """Hash of the code of ``modules``: a change to it invalidates what they built."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


@contextmanager
def exclusive_lock(lock: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on the file ``lock`` (POSIX ``flock``).

    Without ``fcntl`` (Windows), or where the lock cannot be had (a read-only cache, a
    file system without locks), it holds nothing: processes may then build the same result
    side by side, which costs time but not correctness, as each file is written atomically.
    """
    handle = None
    try:
        import fcntl

        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # noqa: SIM115 (closed below, which releases the lock)
        fcntl.flock(handle, fcntl.LOCK_EX)
    except (ImportError, OSError):
        if handle is not None:
            handle.close()
            handle = None
    try:
        yield
    finally:
        if handle is not None:
            handle.close()


def load_or_build(
    prefix: str, key: list, build: Callable[[], Stored], sound: Callable[[Stored], bool]
) -> Stored:
    """The result stored for ``key`` in :func:`cache_dir`, else ``build()``, stored there.

    The file is ``<prefix>_<hash of key>.pt``. A stored result is used only if its key
    equals ``key`` and ``sound(result)`` holds; a damaged or foreign file is rebuilt, not
    trusted. A cache that cannot be written only costs the next process a rebuild.
    """
    name = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
    path = cache_dir() / f"{prefix}_{name}.pt"
    with exclusive_lock(path.with_name(path.name + ".lock")):
        if path.is_file():
            try:
                stored = torch.load(path, weights_only=True)
                if stored["key"] == key and sound(stored["value"]):
                    return stored["value"]
            except Exception as err:  # a damaged file is rebuilt, not trusted
                warnings.warn(f"ignoring the unreadable cached file {path}: {err}", stacklevel=3)
        value = build()
        try:
            save_atomic({"key": key, "value": value}, path)
        except OSError as err:
            warnings.warn(f"could not cache {prefix} in {path}: {err}", stacklevel=3)
    return value
