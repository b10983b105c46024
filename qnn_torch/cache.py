"""Results computed once per lattice and kept on disk: exact tables, banks of paths.

A cached result is a dict of tensors and numbers, stored with the key it was built for
(lattice, settings and a hash of the code that builds it) and a SHA-256 checksum of its
contents, checked on every load (``torch.load`` does not check the zip's CRCs: a flipped
bit in a table's coefficients would otherwise move every exact activity unseen). A file
whose checksum, key or contents do not hold is rebuilt, with a warning. Processes that
need the same result (DDP ranks, test workers) build it once: the first holds a file lock
while it builds, the others wait and then load its file. Temporary files that a killed
writer left behind are removed by the next process that holds the lock.
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
def exclusive_lock(lock: Path) -> Iterator[bool]:
    """Holds an exclusive lock on the file ``lock`` (``filelock``: POSIX and Windows) and
    yields True.

    Where the lock cannot be had (a read-only cache, a file system without locks), it holds
    nothing and yields False: processes may then build the same result side by side, which
    costs time but not correctness, as each file is written atomically.
    """
    held = None
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        held = FileLock(lock)
        held.acquire()
    except OSError:
        held = None
    try:
        yield held is not None
    finally:
        if held is not None:
            held.release()


def checksum(value: Stored) -> str:
    """SHA-256 of a stored result's contents: each entry's name and, for a tensor, its dtype,
    shape and bytes (on CPU), else its ``repr``, in the order of the names."""
    digest = hashlib.sha256()
    for name in sorted(value):
        item = value[name]
        digest.update(name.encode())
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().contiguous()
            digest.update(f"{item.dtype}{tuple(item.shape)}".encode())
            digest.update(item.view(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(item).encode())
    return digest.hexdigest()


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of earlier writes of ``path`` (``.<name>.*.tmp``, see
    :func:`qnn_torch.io.atomic_path`): called while holding ``path``'s lock, so no live
    writer owns them."""
    for temporary in path.parent.glob(f".{path.name}.*.tmp"):
        temporary.unlink(missing_ok=True)


def load_or_build(
    prefix: str, key: list, build: Callable[[], Stored], sound: Callable[[Stored], bool]
) -> Stored:
    """The result stored for ``key`` in :func:`cache_dir`, else ``build()``, stored there.

    The file is ``<prefix>_<hash of key>.pt``. A stored result is used only if its key
    equals ``key``, its contents match their checksum and ``sound(result)`` holds; any
    other file is rebuilt with a warning, not trusted. A cache that cannot be written only
    costs the next process a rebuild.
    """
    name = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
    path = cache_dir() / f"{prefix}_{name}.pt"
    with exclusive_lock(path.with_name(path.name + ".lock")) as locked:
        if locked:  # no other writer can own a temporary file of this path now
            remove_stale_temporaries(path)
        if path.is_file():
            value, problem = _checked(path, key, sound)
            if problem is None:
                return value
            warnings.warn(f"rebuilding the cached {prefix} {path}: {problem}", stacklevel=3)
        value = build()
        try:
            save_atomic({"key": key, "value": value, "checksum": checksum(value)}, path)
        except OSError as err:
            warnings.warn(f"could not cache {prefix} in {path}: {err}", stacklevel=3)
    return value


def _checked(path: Path, key: list, sound: Callable[[Stored], bool]) -> tuple[Stored, str | None]:
    """The value stored at ``path`` and None, or why it cannot be used for ``key``."""
    try:
        stored = torch.load(path, weights_only=True)
    except Exception as err:  # a damaged file is rebuilt, not trusted
        return {}, f"unreadable ({err})"
    if not isinstance(stored, dict) or not {"key", "value", "checksum"} <= set(stored):
        return {}, "not a cached result with a checksum (an older or foreign file)"
    if stored["key"] != key:
        return {}, "built for another key"
    try:
        intact = stored["checksum"] == checksum(stored["value"])
    except Exception as err:  # a value of the wrong form
        return {}, f"unreadable contents ({err})"
    if not intact:
        return {}, "its contents do not match their checksum (the file is damaged)"
    if not sound(stored["value"]):
        return {}, "its values are not sound"
    return stored["value"], None
