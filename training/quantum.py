"""Evaluation of the transferred quantum layer with Lightning (``Trainer.test`` / ``predict``).

The sampler's random numbers for an image depend on the whole batch it is simulated in, so
results would depend on how the data is sharded if the batches did. :class:`IndexedBatches`
therefore cuts the evaluated images into fixed contiguous batches and deals whole batches
to the processes; every batch carries the index of its first image, and
:class:`QuantumEvaluator` seeds the sampler with ``config.seed + that index``. The
predictions are then identical for any number of processes (on the same device type), as
long as the images make at least as many batches as there are processes; below that, each
process gets one near-equal batch, whose boundaries, and hence seeds, depend on the count.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, get_worker_info
from torchmetrics import CatMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from qnn_torch.config import SamplerConfig
from training.data import num_classes
from training.transfer import DEFAULT_COUPLING_SCALE, transfer

Batch = tuple[Tensor, Tensor, int]
"""(images (B, ...), labels (B,), index of the first image in the evaluated dataset)."""

PREDICTORS = ("classical", "quantum", "exact")
"""The predictions :class:`QuantumEvaluator` compares: the twin, the Monte Carlo layer and
the layer's exact estimator."""


def sorted_by_index(gathered: nn.ModuleDict) -> dict[str, Tensor]:
    """The values (N,) int64 CPU that ``CatMetric``s gathered from every process, one per
    name, ordered by the ``"index"`` one (the images' places in the evaluated dataset)."""
    # reshape: CatMetric.compute returns a 0-d tensor when it holds a single image.
    values = {name: metric.compute().long().cpu().reshape(-1) for name, metric in gathered.items()}
    order = values["index"].argsort()
    return {name: value[order] for name, value in values.items()}


class IndexedBatches(IterableDataset):
    """Contiguous batches of a map-style ``(image, label)`` dataset, dealt to processes.

    Batch b holds images ``[b·batch_size, (b+1)·batch_size)`` and goes to process
    ``b mod world_size`` (then to data-loader workers in turn), so the batches never
    depend on the number of processes and no image is repeated or dropped. When that
    makes fewer batches than processes, the images are split into ``world_size``
    near-equal contiguous batches instead, so every process has work (a process gets an
    empty batch when there are fewer images than processes). ``rank`` and ``world_size``
    default to those of the initialised ``torch.distributed`` group (0 and 1 without
    one). Use with ``DataLoader(..., batch_size=None)`` (see :func:`quantum_loader`).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def _shard(self) -> tuple[int, int]:
        if self.rank is None or self.world_size is None:
            # Resolve once, in the main process: data-loader workers may be spawned without
            # torch.distributed, and they receive this object with the values filled in.
            if get_worker_info() is not None:
                raise RuntimeError(
                    "IndexedBatches was not sharded before the workers started: "
                    "call len() on it in the main process first (DataLoader does)"
                )
            distributed = dist.is_available() and dist.is_initialized()
            self.rank = dist.get_rank() if distributed else 0
            self.world_size = dist.get_world_size() if distributed else 1
        return self.rank, self.world_size

    def batch_bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of the batches of this process, in order."""
        rank, world = self._shard()
        images = len(self.dataset)
        if -(-images // self.batch_size) >= world:
            starts = range(0, images, self.batch_size)
            bounds = [(start, min(start + self.batch_size, images)) for start in starts]
        else:  # fewer batches than processes: one near-equal batch each
            edges = [images * part // world for part in range(world + 1)]
            bounds = list(itertools.pairwise(edges))
        return bounds[rank::world]

    def __len__(self) -> int:
        return len(self.batch_bounds())

    def __iter__(self) -> Iterator[Batch]:
        bounds = self.batch_bounds()
        worker = get_worker_info()
        if worker is not None:
            bounds = bounds[worker.id :: worker.num_workers]
        for start, stop in bounds:
            if start == stop:  # this process has no image: an empty batch keeps it in step
                image, _ = self.dataset[0]
                yield torch.empty(0, *image.shape), torch.empty(0, dtype=torch.long), start
                continue
            images, labels = zip(*(self.dataset[i] for i in range(start, stop)), strict=True)
            yield torch.stack(images), torch.as_tensor(labels), start


def quantum_subset(test_set: Dataset, size: int, seed: int) -> Subset:
    """The first ``size`` images of a seeded permutation of the test set, in test-set order."""
    if size >= len(test_set):
        return Subset(test_set, range(len(test_set)))
    permutation = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(seed))
    return Subset(test_set, permutation[:size].sort().values.tolist())


def quantum_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Data loader of :class:`IndexedBatches` for :class:`QuantumEvaluator`."""
    return DataLoader(
        IndexedBatches(dataset, batch_size),
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class QuantumEvaluator(L.LightningModule):
    """The classical twin's weight and its quantum transfer, evaluated side by side.

    ``test_step`` logs ``quantum_acc`` (the Monte Carlo layer), ``exact_acc`` (the same
    layer's exact estimator, its infinite-statistics limit) and ``classical_acc`` (on the
    same images) and ``agreement`` (fraction of images where the quantum and classical
    argmaxes coincide) as torchmetrics, which Lightning aggregates over processes under
    DDP. After ``Trainer.test`` the per-image predictions of all processes, sorted by
    index, are in :attr:`predictions`, and the confusion matrices (rows: true digit,
    columns: prediction) of the classical, Monte Carlo and exact predictions in
    :attr:`confusion_matrices`. ``predict_step`` returns the indices and the
    classical and Monte Carlo scores of a batch.

    Batches are :data:`Batch` triples, as made by :func:`quantum_loader`; the sampler of
    the batch starting at image ``start`` uses seed ``config.seed + start``.

    Args:
        weight: The trained classical weight W, shape (10, 784).
        coupling_scale: k of the couplings k·ε̂.
        per_pixel_shift: Subtract the per-pixel minimum of W before normalising (see
            :mod:`training.transfer`).
        config: Sampler settings; ``seed`` is the base seed.
        decision_sigmas: The layer's decision mode (0: off; else ``config.max_sweeps`` caps
            it, see :class:`~qnn_torch.QuantumNeuronLayer`); ``sweeps`` logs the mean
            measurement sweeps per image.
        couplings: Couplings ε̂ (10, 784) to evaluate instead of the transfer of ``weight``,
            e.g. those of a fine-tuned :class:`training.QuantumClassifier`.
    """

    def __init__(
        self,
        weight: Tensor,
        *,
        coupling_scale: float = DEFAULT_COUPLING_SCALE,
        per_pixel_shift: bool = True,
        config: SamplerConfig | None = None,
        decision_sigmas: float = 0.0,
        couplings: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["weight", "couplings"])
        self.register_buffer("classical_weight", weight.detach().clone().float())
        self.layer = transfer(
            weight, coupling_scale=coupling_scale, per_pixel_shift=per_pixel_shift, config=config
        )
        self.layer.decision_sigmas = decision_sigmas
        if couplings is not None:
            if couplings.shape != self.layer.weight.shape:
                raise ValueError(
                    f"couplings must have shape {tuple(self.layer.weight.shape)}, "
                    f"got {tuple(couplings.shape)}"
                )
            with torch.no_grad():
                self.layer.weight.copy_(couplings)
        self.quantum_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.exact_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.sweeps = MeanMetric()
        self.classical_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.agreement = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.gathered = nn.ModuleDict(
            {name: CatMetric() for name in ("index", "label", *PREDICTORS)}
        )
        self.confusion = nn.ModuleDict(
            {name: MulticlassConfusionMatrix(num_classes=num_classes) for name in PREDICTORS}
        )
        self.predictions: dict[str, Tensor] = {}
        self.confusion_matrices: dict[str, Tensor] = {}

    def classical_scores(self, x: Tensor) -> Tensor:
        """Classical scores X·Wᵀ of images (B, ...) in the images' dtype."""
        return x.flatten(1) @ self.classical_weight.to(x.dtype).T

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """Quantum scores (B, 10) of images (B, ...) with the sampler seed ``seed + start``."""
        return self.layer(x.flatten(1), seed=self.layer.config.seed + start)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        x, y, start = batch
        if len(y):  # empty when there are fewer images than processes: nothing to update
            self._evaluate(x, y, start)
        size = len(y)
        self.log("quantum_acc", self.quantum_acc, prog_bar=True, batch_size=size)
        self.log("exact_acc", self.exact_acc, batch_size=size)
        self.log("sweeps", self.sweeps, batch_size=size)
        self.log("classical_acc", self.classical_acc, prog_bar=True, batch_size=size)
        self.log("agreement", self.agreement, prog_bar=True, batch_size=size)

    def _evaluate(self, x: Tensor, y: Tensor, start: int) -> None:
        """Update every metric with the predictions of images x (B, ...) and labels y (B,)."""
        classical = self.classical_scores(x).argmax(-1)
        estimators = {
            "quantum": lambda: self(x, start),
            "exact": lambda: self.layer.exact_activity(x.flatten(1).double()),
        }
        # The first batch builds what the estimators cache on disk: the path bank of the
        # Monte Carlo's equilibrium start and the exact table. Odd ranks ask for the table
        # first, so that under DDP two processes build the two at once.
        order = list(estimators)[:: -1 if self.global_rank % 2 else 1]
        scores = {name: estimators[name]() for name in order}
        quantum, exact = scores["quantum"].argmax(-1), scores["exact"].argmax(-1)
        self.quantum_acc(quantum, y)
        self.exact_acc(exact, y)
        self.sweeps(self.layer.last_sweeps.double())
        self.classical_acc(classical, y)
        self.agreement(quantum, classical)
        predictions = {"classical": classical, "quantum": quantum, "exact": exact}
        index = torch.arange(start, start + len(y), device=y.device)
        for name, value in (("index", index), ("label", y), *predictions.items()):
            self.gathered[name].update(value)
        for name, value in predictions.items():
            self.confusion[name].update(value, y)

    def on_test_epoch_end(self) -> None:
        """Gather the predictions and confusion matrices of all processes (see the class doc)."""
        self.predictions = sorted_by_index(self.gathered)
        self.confusion_matrices = {
            name: metric.compute().cpu() for name, metric in self.confusion.items()
        }
        for metric in (*self.gathered.values(), *self.confusion.values()):
            metric.reset()

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"index", "classical", "quantum"}``: image indices and both scores (B, 10)."""
        x, _, start = batch
        return {
            "index": torch.arange(start, start + len(x)),
            "classical": self.classical_scores(x),
            "quantum": self(x, start),
        }
