"""MNIST as a Lightning data module, with helpers for machines that cannot download it.

Images come as float32 brightnesses in [0, 1] of shape (1, 28, 28) — no mean/std
normalisation, because brightnesses in [0, 1] are what the quantum layer consumes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset, random_split
from torchvision import transforms
from torchvision.datasets import MNIST

pixel_count = 784
num_classes = 10

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
"""The four archives torchvision's MNIST expects under ``<root>/MNIST/raw``."""

_TRAIN_SIZE = 60_000

DATA_DIR_ENV = "QNN_TORCH_DATA"
"""Environment variable naming the MNIST root (the folder holding ``MNIST/raw``)."""
MIRROR_ENV = "QNN_TORCH_MNIST_MIRROR"
"""Environment variable naming a folder holding ``MNIST/raw/*.gz`` to copy from, for
machines without internet (see :func:`copy_offline_mnist`)."""


def default_data_dir() -> Path:
    """``$QNN_TORCH_DATA`` if set, else ``data`` in the working directory."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def default_mirror() -> Path | None:
    """``$QNN_TORCH_MNIST_MIRROR`` if set, else None."""
    mirror = os.environ.get(MIRROR_ENV)
    return Path(mirror) if mirror else None


def use_mirror_beside_checkout(script: str | Path) -> None:
    """For a checkout's ``scripts/<name>.py``: where ``../shared/data`` beside the checkout
    holds ``MNIST/raw``, make it the default ``$QNN_TORCH_MNIST_MIRROR`` (this project's
    machines have no internet; a mirror already set wins)."""
    shared = Path(script).resolve().parents[2] / "shared" / "data"
    if (shared / "MNIST" / "raw").is_dir():
        os.environ.setdefault(MIRROR_ENV, str(shared))


def _raw_dir(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def ensure_mnist(data_dir: str | Path, download: bool = True) -> Path:
    """Make sure both MNIST splits are usable under ``data_dir`` and return ``data_dir``.

    With ``download=True`` torchvision fetches whatever is missing; when the four ``.gz``
    archives are already in ``<data_dir>/MNIST/raw`` it only checks their md5 and extracts
    them, without touching the network.

    Raises:
        FileNotFoundError: if the data is absent and could not be downloaded; the message
            names the folder and the four files to place there.
    """
    data_dir = Path(data_dir)
    try:
        for train in (True, False):
            MNIST(root=data_dir, train=train, download=download)
    except (RuntimeError, OSError) as err:  # URLError is an OSError
        raw = _raw_dir(data_dir)
        files = "\n".join(f"  {raw / name}" for name in MNIST_FILES)
        action = "downloaded" if download else "loaded with download=False"
        raise FileNotFoundError(
            f"MNIST is missing from {raw} and could not be {action} ({err}).\n"
            f"Provide the four original MNIST archives as\n{files}\n"
            "(copy them there, or name a folder holding MNIST/raw/*.gz with --mnist_mirror or "
            f"${MIRROR_ENV}), then run again: torchvision checks their md5 and extracts them "
            "without network access."
        ) from err
    return data_dir


def copy_offline_mnist(source_root: str | Path, data_dir: str | Path) -> bool:
    """Copy ``<source_root>/MNIST/raw/*.gz`` to ``<data_dir>/MNIST/raw/`` where missing.

    Returns whether any file was copied; does nothing when the source folder is absent.
    The copies are writable even when the sources are read-only, so torchvision can
    extract next to them.
    """
    source, dest = _raw_dir(source_root), _raw_dir(data_dir)
    if not source.is_dir():
        return False
    copied = False
    for archive in sorted(source.glob("*.gz")):
        target = dest / archive.name
        if target.exists():
            continue
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, target)
        copied = True
    return copied


class MNISTDataModule(L.LightningDataModule):
    """MNIST with a seeded train/validation split; the predict set is the test set.

    Args:
        data_dir: Root folder holding ``MNIST/raw``.
        download: Whether :meth:`prepare_data` may download (or extract) the data.
        val_size: Number of the 60 000 training images held out for validation.
        batch_size: Batch size of every data loader.
        num_workers: Worker processes per data loader.
        seed: Seed of the train/validation split.
    """

    pixel_count = pixel_count
    num_classes = num_classes

    def __init__(
        self,
        data_dir: str | Path = "data",
        *,
        download: bool = True,
        val_size: int = 5000,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= val_size < _TRAIN_SIZE:
            raise ValueError(f"val_size must be in [0, {_TRAIN_SIZE}), got {val_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters(ignore=["data_dir"])  # a location, not a hyperparameter
        self.data_dir = Path(data_dir)
        self.transform = transforms.ToTensor()  # uint8 image -> float32 in [0, 1], (1, 28, 28)
        self.train_set: Subset | None = None
        self.val_set: Subset | None = None
        self.test_set: Dataset | None = None

    def prepare_data(self) -> None:
        """Download (or extract) MNIST if allowed; fail with a clear message otherwise."""
        ensure_mnist(self.data_dir, download=self.hparams.download)

    def setup(self, stage: str | None = None) -> None:
        """Build the seeded train/validation split and the test set."""
        if stage in ("fit", "validate", None) and self.train_set is None:
            full = MNIST(self.data_dir, train=True, transform=self.transform)
            val_size = self.hparams.val_size
            if val_size >= len(full):
                raise ValueError(
                    f"val_size must be < {len(full)} (the training images), got {val_size}"
                )
            generator = torch.Generator().manual_seed(self.hparams.seed)
            self.train_set, self.val_set = random_split(
                full, [len(full) - val_size, val_size], generator=generator
            )
        if stage in ("test", "predict", None) and self.test_set is None:
            self.test_set = MNIST(self.data_dir, train=False, transform=self.transform)

    def _loader(self, dataset: Dataset | None, shuffle: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() with the matching stage before asking for loaders")
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)
