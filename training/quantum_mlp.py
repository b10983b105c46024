"""A QuantumMLP trained through its twin with Lightning, then tested by its Monte Carlo.

:class:`QuantumMLPClassifier` holds one :class:`~qnn_torch.QuantumMLP` (one hidden layer).
Training and validation use its differentiable twin (``estimator="twin"``); the logits
are ``logit_scale``·(output activities), with ``logit_scale`` learnt alongside; after
every optimiser step the couplings are projected back to ≥ 0 and into the twin's tables
(:meth:`~qnn_torch.QuantumMLP.bound_to_twin_`). With ``train_estimator="monte_carlo"``
(fine-tuning), training steps sample the network instead (``train_sampler``, a new seed
per step and process) and descend the covariance gradients of the outputs; validation
stays on the twin. ``test_step`` evaluates
the same couplings by the Monte Carlo sampler and by the twin on the same images, batch
by batch as :class:`training.quantum.QuantumEvaluator` does (seed ``config.seed`` + the
batch's first index, so predictions do not depend on the number of processes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchmetrics import CatMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from qnn_torch import QuantumMLP
from qnn_torch.config import (
    LATTICE_FIELDS,
    SEED_LIMIT,
    SamplerConfig,
    check_choice,
    check_same_lattice,
)
from qnn_torch.functional.conv import ConvGeometry, checked_geometry, geometry_state
from qnn_torch.functional.twin import GRID
from training.quantum import Batch, sorted_by_index

MLP_CONFIG = SamplerConfig(
    n_time=32,
    time_extent=1.0,
    lam=200.0,
    n_kinks=2,
    chains=8,
    init="equilibrium",
    thermalization=20,
    sweeps=20,
    max_sweeps=200,
)
"""The MLP's lattice (coarser than the paper's: docs/deep_networks.md) and its Monte Carlo
test: 8 chains from equilibrium starts, in decision mode blocks of 20 sweeps up to 200."""
FINETUNE_MLP_CONFIG = dataclasses.replace(MLP_CONFIG, chains=4, sweeps=20, max_sweeps=0)
"""Monte Carlo fine-tuning steps: 4 chains (a jackknife error for the gradients) × (20 + 20)
sweeps from equilibrium starts on :data:`MLP_CONFIG`'s lattice."""
COUPLING_SCALE = 4.0
"""k of ε = k·ε̂ and η = k·η̂ on :data:`MLP_CONFIG` (Λ = 200)."""
MEAN_BRIGHTNESS_SUM = 100.0  # Σ_i b_i of an average MNIST digit (103 over the training set)
MEAN_SQUARE_SUM = 70.0  # Σ_i b_i² of an average digit
# Initial couplings U(0, s) chosen so that an average digit drives a hidden neuron with
# α ≈ 1.5Λ and inhibits it with β ≈ 0.5Λ, and each hidden neuron's links to the outputs
# deepen its well by Σ_j ε ≈ 0.2Λ.
INITIAL_DRIVE, INITIAL_INHIBITION, INITIAL_DEEPENING = 1.5, 0.5, 0.2
PREDICTORS = ("quantum", "twin")
TRAIN_ESTIMATORS = ("twin", "monte_carlo")


@contextmanager
def switched(mlp: QuantumMLP, **settings: object) -> Iterator[None]:
    """Set attributes of ``mlp`` (estimator, config, decision_sigmas) in the given order for
    the ``with`` block, and restore them in the reverse order afterwards."""
    saved = {name: getattr(mlp, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(mlp, name, value)
        yield
    finally:
        for name, value in reversed(saved.items()):
            setattr(mlp, name, value)


def image_share(mlp: QuantumMLP) -> float:
    """The share of the image one first-layer neuron sees: 1 for a dense layer, kh·kw/(H·W)
    for a convolutional one."""
    return 1.0 if mlp.conv is None else mlp.conv.share


def initialise_couplings(mlp: QuantumMLP, seed: int) -> None:
    """Draw the couplings of a one-hidden-layer MLP (see the constants above; a
    convolutional layer's kernels see their windows' share of the sums), in place."""
    generator = torch.Generator().manual_seed(seed)
    lam, k = mlp.config.lam, float(mlp.coupling_scale)
    k_eta = float(mlp.inhibition_scale)
    outputs = mlp.sizes[2]
    seen = image_share(mlp)
    scales = {
        mlp.excite[0]: 2 * INITIAL_DRIVE * lam / (k * MEAN_BRIGHTNESS_SUM * seen),
        mlp.excite[1]: 2 * INITIAL_DEEPENING * lam / (k * outputs),
    }
    if mlp.inhibit is not None:
        scales[mlp.inhibit[0]] = 2 * INITIAL_INHIBITION * lam / (k_eta * MEAN_SQUARE_SUM * seen)
    with torch.no_grad():
        for weight, scale in scales.items():
            weight.copy_(torch.rand(weight.shape, generator=generator) * scale)


class QuantumMLPClassifier(L.LightningModule):
    """A one-hidden-layer QuantumMLP classifier, trained through its twin (module doc).

    Args:
        sizes: (inputs, hidden, classes).
        config: The lattice and the Monte Carlo test's sampler.
        coupling_scale: k of the excitations and inhibitions.
        lr: Initial Adam learning rate, cosine-annealed to 0 over the run's epochs.
        logit_scale: Initial factor from output activities to logits (learnt).
        seed: Seed of the initial couplings.
        twin_grid: Nodes per axis of the twin's tables.
        decision_sigmas: Decision mode of the Monte Carlo test (0: off).
        conditional_every: Sweeps between the Monte Carlo test's Rao–Blackwell measurements
            of the outputs (0: off; :class:`~qnn_torch.QuantumMLP`).
        conv: A convolutional hidden layer (``sizes[1]`` its neurons; a ConvGeometry or its
            ``as_state()``, which the hyperparameters keep), or None (dense).
        train_estimator: What training steps differentiate: ``"twin"``, or
            ``"monte_carlo"`` (fine-tuning through the sampler).
        train_sampler: The sampler of Monte Carlo training steps, on ``config``'s lattice
            (None: :data:`FINETUNE_MLP_CONFIG`'s chains and sweeps on that lattice).
    """

    def __init__(
        self,
        sizes: tuple[int, int, int] = (784, 128, 10),
        *,
        config: SamplerConfig = MLP_CONFIG,
        coupling_scale: float = COUPLING_SCALE,
        lr: float = 2e-2,
        logit_scale: float = 3.0,
        seed: int = 0,
        twin_grid: tuple[int, ...] = GRID,
        decision_sigmas: float = 3.0,
        conditional_every: int = 10,
        conv: ConvGeometry | dict[str, object] | None = None,
        train_estimator: str = "twin",
        train_sampler: SamplerConfig | None = None,
    ) -> None:
        super().__init__()
        if len(sizes) != 3:
            raise ValueError(f"sizes must be (inputs, hidden, classes), got {sizes!r}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        check_choice("train_estimator", train_estimator, TRAIN_ESTIMATORS)
        if train_sampler is None:
            lattice = {field: getattr(config, field) for field in LATTICE_FIELDS}
            train_sampler = dataclasses.replace(FINETUNE_MLP_CONFIG, **lattice)
        check_same_lattice("train_sampler", train_sampler, "config", config)
        conv = checked_geometry(conv)
        self.train_sampler = train_sampler
        # Plain values only (weights_only loads); the config lives in the QuantumMLP's state.
        self.save_hyperparameters(ignore=["config", "conv", "train_sampler"])
        self.hparams["conv"] = geometry_state(conv)
        self.mlp = QuantumMLP(
            sizes,
            config=config,
            readout="activity",
            coupling_scale=coupling_scale,
            inhibition_scale=coupling_scale,
            estimator="twin",
            twin_grid=twin_grid,
            decision_sigmas=decision_sigmas,
            conditional_every=conditional_every,
            conv=conv,
        )
        initialise_couplings(self.mlp, seed)
        self.mlp.inhibit[1].requires_grad_(False)  # the twin has no hidden-output inhibition
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.train_acc = MulticlassAccuracy(num_classes=sizes[2], average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=sizes[2], average="micro")
        self.test_acc = nn.ModuleDict(
            {n: MulticlassAccuracy(num_classes=sizes[2], average="micro") for n in PREDICTORS}
        )
        self.agreement = MulticlassAccuracy(num_classes=sizes[2], average="micro")
        self.sweeps = MeanMetric()
        self.gathered = nn.ModuleDict(
            {name: CatMetric() for name in ("index", "label", *PREDICTORS)}
        )
        self.predictions: dict[str, Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        """Twin logits (B, classes) of images (B, ...)."""
        return self.logit_scale * self.mlp.activities(x.flatten(1))[-1]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.hparams.train_estimator == "twin":
            logits = self(x)
        else:  # a new stream per step and process, the same for the same run
            step = self.global_step * self.trainer.world_size + self.global_rank
            seed = (self.train_sampler.seed + step) % SEED_LIMIT
            sampler = dataclasses.replace(self.train_sampler, seed=seed)
            with switched(
                self.mlp,
                estimator="monte_carlo",
                decision_sigmas=0.0,
                conditional_every=0,
                config=sampler,
            ):
                logits = self.logit_scale * self.mlp(x.flatten(1))
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits.argmax(-1), y)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", self.train_acc, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        # Projected gradient descent: couplings stay >= 0, and within the twin's tables.
        self.mlp.project_weights_().bound_to_twin_()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_acc(self(x).argmax(-1), y)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        x, y, start = batch
        if len(y):  # empty when there are fewer images than processes
            flat = x.flatten(1)
            twin = self.mlp.activities(flat)[-1].argmax(-1)
            with switched(self.mlp, estimator="monte_carlo"):
                quantum = self.mlp.activities(flat, seed=self.mlp.config.seed + start)[-1]
            quantum = quantum.argmax(-1)
            self.sweeps(self.mlp.last_sweeps.double())
            index = torch.arange(start, start + len(y), device=y.device)
            for name, value in (
                ("index", index),
                ("label", y),
                ("quantum", quantum),
                ("twin", twin),
            ):
                self.gathered[name].update(value)
            self.test_acc["quantum"](quantum, y)
            self.test_acc["twin"](twin, y)
            self.agreement(quantum, twin)
        size = len(y)
        self.log("quantum_acc", self.test_acc["quantum"], prog_bar=True, batch_size=size)
        self.log("twin_acc", self.test_acc["twin"], prog_bar=True, batch_size=size)
        self.log("agreement", self.agreement, batch_size=size)
        self.log("sweeps", self.sweeps, batch_size=size)

    def on_test_epoch_end(self) -> None:
        """Gather every process's predictions, sorted by image index, into ``predictions``."""
        self.predictions = sorted_by_index(self.gathered)
        for metric in self.gathered.values():
            metric.reset()

    def configure_optimizers(self) -> dict[str, object]:
        # Adam steps each coupling by about lr. A kernel entry is 1/share times a dense
        # coupling (initialise_couplings), so its step is too: the drives then move alike.
        first = {id(w) for w in (self.mlp.excite[0], self.mlp.inhibit[0])}
        trainable = [p for p in self.parameters() if p.requires_grad]
        lr = self.hparams.lr
        groups = [
            {"params": [p for p in trainable if id(p) in first], "lr": lr / image_share(self.mlp)},
            {"params": [p for p in trainable if id(p) not in first], "lr": lr},
        ]
        optimizer = torch.optim.Adam(groups, lr=lr)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def twin_accuracy(
    classifier: QuantumMLPClassifier, dataset: Dataset, batch_size: int = 500
) -> float:
    """The twin's accuracy on every image of ``dataset`` (``(image, label)`` pairs)."""
    correct = 0
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        correct += int((classifier(images.to(classifier.device)).argmax(-1).cpu() == labels).sum())
    return correct / len(dataset)


@torch.no_grad()
def layer_comparison(mlp: QuantumMLP, images: Tensor) -> list[dict[str, float]]:
    """The twin against the Monte Carlo, neuron by neuron, on images (B, I): per layer the
    mean Monte Carlo activity, the median and largest relative difference, and the median
    and largest |z| (difference over the Monte Carlo's standard error). The Monte Carlo is
    ``mlp.config``'s sampler without decision mode, measuring ``max_sweeps`` sweeps."""
    config = mlp.config
    measured = dataclasses.replace(config, sweeps=max(config.sweeps, config.max_sweeps))
    with switched(mlp, decision_sigmas=0.0, config=measured, estimator="monte_carlo"):
        sampled = mlp.activities(images)
        stderr = mlp.last_stderr
    with switched(mlp, estimator="twin"):
        twin = mlp.activities(images)
    layers = []
    for mc, error, tw in zip(sampled, stderr, twin, strict=True):
        relative = ((tw - mc) / mc).abs().double()
        z = ((tw - mc).double() / error).abs()
        layers.append(
            {
                "neurons": mc.shape[-1],
                "mean_activity": mc.mean().item(),
                "median_relative_difference": relative.median().item(),
                "largest_relative_difference": relative.max().item(),
                "median_abs_z": z.median().item(),
                "largest_abs_z": z.max().item(),
            }
        )
    return layers
