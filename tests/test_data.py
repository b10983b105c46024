"""Tests of the MNIST data module on a tiny MNIST written in IDX format (no network)."""

from __future__ import annotations

import gzip
import hashlib
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from training.data import (
    MNIST_FILES,
    MNISTDataModule,
    copy_offline_mnist,
    ensure_mnist,
    num_classes,
    pixel_count,
)

N_TRAIN, N_TEST = 64, 32


def _idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x0000 08 <ndim>, big-endian int32 sizes, data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _tiny_arrays(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = 0, 255  # both ends of the brightness range
    labels = (np.arange(n) + offset) % num_classes
    return images, labels.astype(np.uint8)


def _write_tiny_mnist(root: Path, extracted: bool = True) -> dict[str, str]:
    """Write the four official ``.gz`` archives (and, if ``extracted``, the raw IDX files that
    torchvision's ``MNIST._check_exists`` looks for) under ``root/MNIST/raw``; return their md5s.
    """
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train, test = _tiny_arrays(N_TRAIN, 0), _tiny_arrays(N_TEST, 1)
    contents = {
        "train-images-idx3-ubyte": _idx_bytes(train[0]),
        "train-labels-idx1-ubyte": _idx_bytes(train[1]),
        "t10k-images-idx3-ubyte": _idx_bytes(test[0]),
        "t10k-labels-idx1-ubyte": _idx_bytes(test[1]),
    }
    md5s = {}
    for name, data in contents.items():
        archive = gzip.compress(data, mtime=0)
        (raw / f"{name}.gz").write_bytes(archive)
        md5s[f"{name}.gz"] = hashlib.md5(archive).hexdigest()
        if extracted:
            (raw / name).write_bytes(data)
    return md5s


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every urllib request (all torchvision downloads go through it) fail at once."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    _write_tiny_mnist(tmp_path)
    return tmp_path


def test_constants() -> None:
    assert pixel_count == 784 and num_classes == 10
    assert MNISTDataModule.pixel_count == 784 and MNISTDataModule.num_classes == 10


def test_loads_tiny_mnist_offline(tiny_root: Path) -> None:
    dm = MNISTDataModule(tiny_root, download=False, val_size=16, batch_size=8)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (N_TRAIN - 16, 16)

    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert labels.shape == (8,) and labels.dtype == torch.int64
    assert ((labels >= 0) & (labels < num_classes)).all()

    # brightness = byte / 255, no normalisation
    raw_images, raw_labels = _tiny_arrays(N_TRAIN, 0)
    index = dm.val_set.indices[0]
    image, label = dm.val_set[0]
    torch.testing.assert_close(image[0], torch.from_numpy(raw_images[index]).float() / 255)
    assert label == raw_labels[index]
    assert image[0, 0, 0] == 0 and image[0, 0, 1] == 1

    assert sum(len(b[1]) for b in dm.val_dataloader()) == 16

    dm.setup("test")
    assert len(dm.test_set) == N_TEST
    assert sum(len(b[1]) for b in dm.test_dataloader()) == N_TEST
    assert sum(len(b[1]) for b in dm.predict_dataloader()) == N_TEST
    test_labels = torch.cat([b[1] for b in dm.test_dataloader()])
    assert test_labels.tolist() == _tiny_arrays(N_TEST, 1)[1].tolist()  # test set not shuffled


def test_split_is_seeded(tiny_root: Path) -> None:
    def val_indices(seed: int) -> list[int]:
        dm = MNISTDataModule(tiny_root, download=False, val_size=16, seed=seed)
        dm.setup("fit")
        assert sorted(dm.train_set.indices + dm.val_set.indices) == list(range(N_TRAIN))
        return dm.val_set.indices

    assert val_indices(3) == val_indices(3)
    assert val_indices(3) != val_indices(4)


def test_val_size_larger_than_tiny_train_set(tiny_root: Path) -> None:
    dm = MNISTDataModule(tiny_root, download=False, val_size=N_TRAIN)
    with pytest.raises(ValueError, match="val_size"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"val_size": -1}, "val_size", "-1"),
        ({"val_size": 60000}, "val_size", "60000"),
        ({"batch_size": 0}, "batch_size", "0"),
        ({"num_workers": -2}, "num_workers", "-2"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, int], name: str, value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=name) as info:
        MNISTDataModule(tmp_path, **kwargs)
    assert value in str(info.value)


def test_hyperparameters_saved(tmp_path: Path) -> None:
    dm = MNISTDataModule(tmp_path, val_size=10, batch_size=4, seed=7)
    assert (dm.hparams.val_size, dm.hparams.batch_size, dm.hparams.seed) == (10, 4, 7)


def _assert_clear_error(error: BaseException, root: Path) -> None:
    message = str(error)
    assert str(root / "MNIST" / "raw") in message
    for name in MNIST_FILES:
        assert name in message
    assert "--mnist_mirror" in message and "QNN_TORCH_MNIST_MIRROR" in message


def test_missing_dataset_without_download(tmp_path: Path) -> None:
    dm = MNISTDataModule(tmp_path, download=False)
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    _assert_clear_error(info.value, tmp_path)


@pytest.mark.usefixtures("no_network")
def test_failed_download_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        ensure_mnist(tmp_path, download=True)
    _assert_clear_error(info.value, tmp_path)


@pytest.mark.usefixtures("no_network")
def test_download_extracts_local_archives_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5s = _write_tiny_mnist(tmp_path, extracted=False)
    # torchvision checks the archives against the official md5s: use those of our tiny ones
    monkeypatch.setattr(MNIST, "resources", [(name, md5s[name]) for name in MNIST_FILES])
    with pytest.raises(FileNotFoundError):
        ensure_mnist(tmp_path, download=False)  # archives alone are not enough
    assert ensure_mnist(tmp_path, download=True) == tmp_path
    assert len(MNIST(tmp_path, train=False)) == N_TEST


def test_copy_offline_mnist(tmp_path: Path) -> None:
    source, dest = tmp_path / "shared", tmp_path / "project" / "data"
    assert not copy_offline_mnist(source, dest)  # no source: nothing to do
    assert not dest.exists()

    _write_tiny_mnist(source, extracted=False)
    for archive in (source / "MNIST" / "raw").iterdir():
        archive.chmod(0o444)
    assert copy_offline_mnist(source, dest)
    for name in MNIST_FILES:
        copy = dest / "MNIST" / "raw" / name
        assert copy.read_bytes() == (source / "MNIST" / "raw" / name).read_bytes()
        assert copy.stat().st_mode & 0o200  # writable, so torchvision can extract next to it
    assert not copy_offline_mnist(source, dest)  # already there
