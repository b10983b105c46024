"""Quantum-aware training: a QuantumNeuronLayer trained on MNIST through its estimator.

The layer's activities are differentiable, so the couplings ε̂ learn from the
cross-entropy of the quantum net itself, starting from the transferred classical twin or
from scratch. With the Monte Carlo estimator every step runs the sampler and
∂A/∂α = −Cov(O, ∂S/∂α) comes from the same run (a noisy stochastic gradient); with the
exact estimator (the layer's infinite-statistics limit, see
:mod:`qnn_torch.functional.activity_table`) the activities and gradients are exact and a
step costs a matrix product. Logits are
``logit_scale · activity`` with a fixed ``logit_scale``: it changes no prediction, but it
sets the margin that the cross-entropy asks for (it stops pushing once
logit_scale·(A_true − A_other) is a few units), and a margin in activity is what keeps a
prediction stable under the Monte Carlo noise of evaluation. After every optimiser step
the couplings are projected onto ε̂ ≥ 0 (projected gradient descent), so excitations
never turn negative, and, with ``max_total_coupling``, scaled down whenever their sum
exceeds it.

Why bound the sum: the drives grow with the couplings, and so does the Monte Carlo
noise of the margin between two close outputs. For two outputs 0.01 apart in exact
activity, the evaluation's 4 chains × 600 sweeps (common random numbers) measure their
margin with a standard error of 0.0034 at activity 0.47 (the transferred twin's typical
top output), 0.0083 at 0.87 and 0.012 at 1.3–2.0 (``scripts/benchmark_sampler.py
--sections margin``, 64 chains). Unbounded exact fine-tuning on MNIST lifted the top
activities from 0.47 to 1.55, and the Monte Carlo then disagreed with the exact argmax on
3.7 % of the test images, against 1.3 % before (docs/mnist.md).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.nn.functional import cross_entropy
from torchmetrics.classification import MulticlassAccuracy

from qnn_torch.config import SamplerConfig
from qnn_torch.module.layer import QuantumNeuronLayer
from training.data import num_classes, pixel_count
from training.transfer import DEFAULT_COUPLING_SCALE, transfer


def calibrate_logit_scale(layer: QuantumNeuronLayer, weight: Tensor, images: Tensor) -> float:
    """The scale s that maps activities onto the twin's logits, by least squares.

    With z = X·Wᵀ the classical logits and A the layer's activities of ``images`` (B, ...),
    both centred per image (softmax ignores a per-image shift), s minimises
    Σ (s·A_c − z_c)², s = Σ A_c·z_c / Σ A_c². Cross-entropy on s·A then starts where the
    twin's left off: the transferred layer's activities differ by ~0.05 between the top two
    classes at k = 100, so a scale of a few units would leave every image "uncertain".
    """
    with torch.no_grad():
        activity = layer(images.flatten(1).to(layer.weight))
        logits = images.flatten(1).to(weight) @ weight.T
    a = activity - activity.mean(-1, keepdim=True)
    z = (logits - logits.mean(-1, keepdim=True)).to(a)
    scale = float((a * z).sum() / (a * a).sum())
    if not scale > 0 or not torch.isfinite(torch.tensor(scale)):
        raise ValueError(
            f"the activities do not follow the twin's logits (least-squares scale {scale!r}): "
            "check coupling_scale and the sampler settings"
        )
    return scale


FINETUNE_CONFIG = SamplerConfig(chains=2, thermalization=30, sweeps=60, init="spikes")
"""Sampler settings of a Monte Carlo training step: cheap and noisy, as a stochastic
gradient may be (the exact estimator uses only the lattice of the config)."""
FINETUNE_COUPLING_BUDGET = 2.0
"""Default bound on the couplings' sum while fine-tuning from the twin, in units of the
transferred sum. Exact fine-tuning (10 epochs, lr 3e-2) with the sum held at the
transferred one, bounded by twice it, and unbounded: 91.80, 92.32 and 92.40 % on the 5 000
validation images (twin 91.98 %); on 1 000 test images (every tenth) the Monte Carlo's
decisions agreed with the exact argmax on 98.6, 97.8 and 96.9 % of them (the unbounded
couplings from a two-process run; docs/mnist.md).
2 keeps most of the gain at a noise the evaluation sampler resolves better."""
FINETUNE_LR = {"exact": 3e-2, "monte_carlo": 1e-4}
"""Initial Adam learning rates (cosine-annealed), MNIST at k = 100 (docs/mnist.md): exact,
the best of 1e-3, 3e-3, 1e-2, 3e-2, 1e-1 on the 5 000 validation images after 10 epochs;
Monte Carlo, from earlier constant-rate runs on test images (1e-3 lost 10 points)."""


class QuantumClassifier(L.LightningModule):
    """Trains the couplings of a ``QuantumNeuronLayer`` (784 → 10) by gradient descent.

    Args:
        layer: The layer to train (its ``readout`` must be ``"activity"``; see
            :meth:`from_twin` and :meth:`from_scratch`). Its ``config`` sets the sampler
            of each training step; the step's seed is ``config.seed`` plus the global
            step times the number of processes plus the process rank, so every step and
            process draws fresh random numbers.
        lr: Adam's initial learning rate for the couplings, annealed to 0 over the run
            (cosine). Adam moves every coupling by about ``lr`` per step whatever the
            gradient's size, and a drive k·Σ_i ε̂_i·b_i sums ~150 bright pixels. With Monte
            Carlo gradients, whose sign flips from step to step, keep k·150·lr well below
            the drives (k = 100: lr ≈ 1e-4; 1e-3 lost 10 points). Exact gradients point the
            same way step after step, the couplings settle as the rate anneals, and the
            default 3e-2 was the best of 1e-3 … 1e-1 on validation images (``FINETUNE_LR``).
        logit_scale: Fixed scale of the logits (see the module doc).
        max_total_coupling: Bound on Σ ε̂ kept after every step (see the module doc); None:
            unbounded.
    """

    def __init__(
        self,
        layer: QuantumNeuronLayer,
        *,
        lr: float = 1e-4,
        logit_scale: float = 5.0,
        max_total_coupling: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(layer, QuantumNeuronLayer):
            raise ValueError(f"layer must be a QuantumNeuronLayer, got {type(layer).__name__}")
        if layer.readout != "activity":
            raise ValueError(
                f"layer.readout must be 'activity' for training, got {layer.readout!r}"
            )
        if (layer.in_features, layer.out_features) != (pixel_count, num_classes):
            raise ValueError(
                f"layer must map {pixel_count} pixels to {num_classes} classes, got "
                f"{layer.in_features} → {layer.out_features}"
            )
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale!r}")
        if max_total_coupling is not None and not (
            math.isfinite(max_total_coupling) and max_total_coupling > 0
        ):
            raise ValueError(
                f"max_total_coupling must be a finite number > 0 or None, got "
                f"{max_total_coupling!r}"
            )
        self.save_hyperparameters(ignore=["layer"])
        self.layer = layer.project_weights_(max_total_coupling)  # feasible from the start
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    @classmethod
    def from_twin(
        cls,
        weight: Tensor,
        *,
        coupling_scale: float = DEFAULT_COUPLING_SCALE,
        per_pixel_shift: bool = True,
        config: SamplerConfig = FINETUNE_CONFIG,
        estimator: str = "monte_carlo",
        calibration_images: Tensor | None = None,
        coupling_budget: float | None = None,
        **kwargs: Any,
    ) -> QuantumClassifier:
        """Start from the transfer of the classical twin's weight W (10, 784).

        ``estimator`` is the layer's (``"monte_carlo"`` or ``"exact"``). With
        ``calibration_images`` (B, ...) the logit scale is fitted to the twin's logits
        (:func:`calibrate_logit_scale`) instead of taken from ``logit_scale``. With
        ``coupling_budget`` b > 0 the couplings' sum stays at most b times the transferred
        one (``max_total_coupling``).
        """
        if coupling_budget is not None and not (
            math.isfinite(coupling_budget) and coupling_budget > 0
        ):
            raise ValueError(
                f"coupling_budget must be a finite number > 0 or None, got {coupling_budget!r}"
            )
        layer = transfer(
            weight,
            coupling_scale=coupling_scale,
            per_pixel_shift=per_pixel_shift,
            readout="activity",
            config=config,
            estimator=estimator,
        )
        if calibration_images is not None:
            kwargs["logit_scale"] = calibrate_logit_scale(layer, weight, calibration_images)
        if coupling_budget is not None:
            if "max_total_coupling" in kwargs:
                raise ValueError(
                    "give coupling_budget (relative) or max_total_coupling (absolute), not both"
                )
            bound = coupling_budget * float(layer.weight.detach().sum())
            if not (math.isfinite(bound) and bound > 0):
                raise ValueError(
                    f"coupling_budget={coupling_budget!r} times the transferred sum of the "
                    f"couplings is not a finite number > 0 ({bound!r})"
                )
            kwargs["max_total_coupling"] = bound
        return cls(layer, **kwargs)

    @classmethod
    def from_scratch(
        cls,
        *,
        coupling_scale: float = DEFAULT_COUPLING_SCALE,
        config: SamplerConfig = FINETUNE_CONFIG,
        estimator: str = "monte_carlo",
        seed: int = 0,
        **kwargs: Any,
    ) -> QuantumClassifier:
        """Start from random couplings ε̂ uniform in [0, 0.1) (seeded)."""
        layer = QuantumNeuronLayer(
            pixel_count,
            num_classes,
            coupling_scale=coupling_scale,
            readout="activity",
            config=config,
            estimator=estimator,
        )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            layer.weight.copy_(0.1 * torch.rand(layer.weight.shape, generator=generator))
        return cls(layer, **kwargs)

    @property
    def couplings(self) -> Tensor:
        """The trained couplings ε̂ (10, 784), detached."""
        return self.layer.weight.detach()

    def forward(self, x: Tensor, seed: int | None = None) -> Tensor:
        """Logits (B, 10) = logit_scale · activities of images (B, ...)."""
        return self.logit_scale * self.layer(x.flatten(1), seed=seed)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        step_seed = self.layer.config.seed + self.global_step * self.trainer.world_size
        logits = self(x, seed=step_seed + self.global_rank)
        loss = cross_entropy(logits, y)
        self.train_acc(logits.detach(), y)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", self.train_acc, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``val_loss`` and ``val_acc`` of a batch; the sampler's seed depends on the batch
        and the process only, so every epoch is judged with the same random numbers."""
        x, y = batch
        seed = self.layer.config.seed + batch_idx * self.trainer.world_size + self.global_rank
        logits = self(x, seed=seed)
        self.val_acc(logits, y)
        self.log("val_loss", cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam, its learning rate annealed from ``lr`` to 0 over the run (cosine, per step).

        The schedule ends at the trainer's estimated steps and stays at 0 beyond them.
        """
        steps = self.trainer.estimated_stepping_batches
        if not (math.isfinite(steps) and steps >= 1):
            raise ValueError(
                "QuantumClassifier anneals its learning rate over the run, whose length is "
                f"unknown (estimated steps {steps}): give the Trainer max_epochs or max_steps "
                "and a training data loader with a length"
            )
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

        def cosine(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser's step, then the projection onto ε̂ ≥ 0 (and Σ ε̂ ≤ the bound)."""
        super().optimizer_step(*args, **kwargs)
        self.layer.project_weights_(self.hparams.max_total_coupling)
