"""qnn_torch.cache: where results are kept, tables cached on disk, and the build lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from platformdirs import user_cache_dir

from qnn_torch.cache import cache_dir, checksum, exclusive_lock
from qnn_torch.functional.activity_table import activity_table
from tests.helpers import SMALL


def test_cache_dir_is_the_environment_variable_or_the_users_cache_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QNN_TORCH_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("QNN_TORCH_CACHE")
    assert cache_dir() == Path(user_cache_dir("qnn_torch", appauthor=False))


def test_an_empty_cache_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty QNN_TORCH_CACHE would mean the working directory: refused, not guessed."""
    monkeypatch.setenv("QNN_TORCH_CACHE", "")
    with pytest.raises(ValueError, match="QNN_TORCH_CACHE is set but empty"):
        cache_dir()


@pytest.fixture
def fresh_tables() -> Iterator[None]:
    """Tables built in memory by the test are forgotten before and after it."""
    from qnn_torch.functional import activity_table as module

    module._build_table.cache_clear()
    yield
    module._build_table.cache_clear()


@pytest.mark.usefixtures("fresh_tables")
def test_tables_are_cached_on_disk_and_rebuilt_when_the_key_differs(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from qnn_torch.functional import activity_table as module

    monkeypatch.setenv("QNN_TORCH_CACHE", str(tmp_path))
    built = activity_table(**SMALL, max_drive=100.0)
    (stored,) = tmp_path.glob("activity_table_*.pt")
    module._build_table.cache_clear()
    loaded = activity_table(**SMALL, max_drive=100.0)
    torch.testing.assert_close(loaded.coefficients, built.coefficients, rtol=0, atol=0)
    assert loaded.error_bound == built.error_bound
    # A file whose key does not match (e.g. a hash collision) is not trusted.
    state = torch.load(stored, weights_only=True)
    state["key"][0] += 1
    state["value"]["coefficients"] = state["value"]["coefficients"] * 2
    state["checksum"] = checksum(state["value"])
    torch.save(state, stored)
    module._build_table.cache_clear()
    with pytest.warns(UserWarning, match="built for another key"):
        rebuilt = activity_table(**SMALL, max_drive=100.0)
    torch.testing.assert_close(rebuilt.coefficients, built.coefficients, rtol=0, atol=0)


def _flip_a_bit_of(path: Path, tensor: torch.Tensor) -> None:
    """Flip one bit inside ``tensor``'s bytes in the zip file at ``path`` (its CRC is not
    updated, and torch.load does not check it)."""
    data = bytearray(path.read_bytes())
    start = data.find(tensor.numpy().tobytes()[:64])
    assert start > 0
    data[start + 9] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.usefixtures("fresh_tables")
def test_a_damaged_table_is_rebuilt_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One flipped bit in the coefficients moved every exact activity by 0.06 before the
    checksum; now the file is rebuilt and the activities are the true ones."""
    from qnn_torch.functional import activity_table as module

    monkeypatch.setenv("QNN_TORCH_CACHE", str(tmp_path))
    built = activity_table(**SMALL, max_drive=100.0)
    (stored,) = tmp_path.glob("activity_table_*.pt")
    _flip_a_bit_of(stored, torch.load(stored, weights_only=True)["value"]["coefficients"])
    damaged = torch.load(stored, weights_only=True)["value"]["coefficients"]
    assert not torch.equal(damaged, built.coefficients)  # the flip took
    module._build_table.cache_clear()
    with pytest.warns(UserWarning, match="do not match their checksum"):
        rebuilt = activity_table(**SMALL, max_drive=100.0)
    torch.testing.assert_close(rebuilt.coefficients, built.coefficients, rtol=0, atol=0)
    reloaded = torch.load(stored, weights_only=True)
    assert reloaded["checksum"] == checksum(reloaded["value"])  # the file was rewritten


@pytest.mark.usefixtures("fresh_tables")
def test_files_without_a_checksum_and_stale_temporaries_are_cleaned_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from qnn_torch.functional import activity_table as module

    monkeypatch.setenv("QNN_TORCH_CACHE", str(tmp_path))
    built = activity_table(**SMALL, max_drive=100.0)
    (stored,) = tmp_path.glob("activity_table_*.pt")
    state = torch.load(stored, weights_only=True)
    del state["checksum"]  # as written before checksums
    torch.save(state, stored)
    stale = tmp_path / f".{stored.name}.abc123.tmp"  # a writer killed mid-write
    stale.write_bytes(b"\0" * 1000)
    module._build_table.cache_clear()
    with pytest.warns(UserWarning, match="not a cached result with a checksum"):
        rebuilt = activity_table(**SMALL, max_drive=100.0)
    torch.testing.assert_close(rebuilt.coefficients, built.coefficients, rtol=0, atol=0)
    assert not stale.exists()
    assert checksum({"b": torch.ones(2), "a": 1}) == checksum({"a": 1, "b": torch.ones(2)})
    assert checksum({"a": torch.ones(2)}) != checksum({"a": torch.ones(2, dtype=torch.float64)})


@pytest.mark.usefixtures("fresh_tables")
def test_a_table_being_built_elsewhere_is_waited_for_and_loaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """While another process holds a table's lock (building it), a second caller waits and
    then loads that process's file instead of building its own."""
    from qnn_torch.functional import activity_table as module

    monkeypatch.setenv("QNN_TORCH_CACHE", str(tmp_path))
    built = activity_table(**SMALL, max_drive=100.0)
    (stored,) = tmp_path.glob("activity_table_*.pt")
    state = torch.load(stored, weights_only=True)
    state["value"]["coefficients"] = state["value"]["coefficients"] * 2  # the other's file
    state["checksum"] = checksum(state["value"])
    stored.unlink()
    module._build_table.cache_clear()

    def refuse(*args: object) -> None:
        raise AssertionError("built a table that another process was building")

    monkeypatch.setattr(module, "_tabulate", refuse)
    result: dict[str, object] = {}
    with exclusive_lock(stored.with_name(stored.name + ".lock")):
        waiting = threading.Thread(
            target=lambda: result.update(table=activity_table(**SMALL, max_drive=100.0))
        )
        waiting.start()
        time.sleep(0.5)  # without the lock it would find no file and build one now
        assert waiting.is_alive()  # it waits for the lock
        torch.save(state, stored)
    waiting.join()
    torch.testing.assert_close(result["table"].coefficients, 2 * built.coefficients, rtol=0, atol=0)
