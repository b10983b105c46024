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
from filelock import FileLock
from platformdirs import user_cache_dir

from qnn_torch.io import save_atomic

Stored = dict[str, object]


CACHE_ENV = "QNN_TORCH_CACHE"
"""Environment variable naming the cache folder."""


def cache_dir() -> Path:
    """Where built results are kept: ``$QNN_TORCH_CACHE``, else the user's cache folder
    (platformdirs: ``~/.cache/qnn_torch`` on Linux, honouring ``$XDG_CACHE_HOME``).

    Raises ValueError when ``$QNN_TORCH_CACHE`` is set but empty (it would mean the working
    directory).
    """
    if CACHE_ENV in os.environ:
        if not os.environ[CACHE_ENV]:
            raise ValueError(
                f"{CACHE_ENV} is set but empty: name a folder, or unset it for the default "
                f"({user_cache_dir('qnn_torch', appauthor=False)})"
            )
        return Path(os.environ[CACHE_ENV])
    return Path(user_cache_dir("qnn_torch", appauthor=False))


def source_digest(*modules: ModuleType) -> str:
    """Hash of the code of ``modules``: a change to it invalidates what they built."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


@contextmanager
def exclusive_lock(lock: Path) -> Iterator[None]:
    """Holds an exclusive lock on the file ``lock`` (``filelock``: POSIX and Windows).

    Where the lock cannot be had (a read-only cache, a file system without locks), it holds
    nothing: processes may then build the same result side by side, which costs time but
    not correctness, as each file is written atomically.
    """
    held = None
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        held = FileLock(lock)
        held.acquire()
    except OSError:
        held = None
    try:
        yield
    finally:
        if held is not None:
            held.release()


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
