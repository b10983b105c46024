"""Classical twin of a quantum layer: logistic regression with non-negative weights."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.nn.functional import cross_entropy
from torchmetrics.classification import MulticlassAccuracy

from qnn_torch.functional.conv import ConvGeometry, checked_geometry, geometry_state
from training.data import num_classes, pixel_count


class ClassicalTwin(L.LightningModule):
    """Multinomial logistic regression ``S = X·Wᵀ`` whose weights are pushed to be non-negative.

    The loss is the softmax cross-entropy plus ``penalty · Σ max(−W_ij, 0)``; with
    ``penalty ≫ 1`` the weights end (numerically) non-negative, as for the quantum layer.

    Softmax is unchanged when the weights of all classes at one pixel are shifted by the same
    constant, so the constraint costs no accuracy, and initialising every weight to the constant
    ``init_value`` is equivalent, for the cross-entropy, to the usual zero initialisation of
    logistic regression. Starting inside the feasible region with room to move matters with
    Adam: at the boundary the huge penalty gradient kicks weights back up and inflates Adam's
    second-moment estimate, which freezes them and costs several points of accuracy. Adam's
    learning rate follows a cosine decay to zero over the run (when the Trainer knows its
    length), so any weight that does reach the boundary late in training overshoots below
    zero only by a tiny amount. Nothing is clamped.

    Args:
        penalty: Strength λ of the penalty on negative weights.
        lr: Initial learning rate of Adam.
        weight_decay: L2 weight decay of Adam.
        init_value: Constant every weight starts from.
    """

    def __init__(
        self,
        penalty: float = 100.0,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        init_value: float = 1.0,
    ) -> None:
        super().__init__()
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()
        self.linear = nn.Linear(pixel_count, num_classes, bias=False)
        nn.init.constant_(self.linear.weight, init_value)
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    @property
    def weight(self) -> Tensor:
        """The weight matrix W, shape (10, 784)."""
        return self.linear.weight

    def forward(self, x: Tensor) -> Tensor:
        """Scores of shape (B, 10) for images of shape (B, 1, 28, 28) or (B, 784)."""
        return self.linear(x.reshape(x.shape[0], pixel_count))

    def negativity(self) -> Tensor:
        """``Σ max(−W_ij, 0)``: the total amount by which the weights are negative."""
        return torch.relu(-self.weight).sum()

    def loss(self, scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(loss, cross_entropy, penalty · negativity)`` with ``loss`` their sum."""
        ce = cross_entropy(scores, targets)
        penalty_term = self.hparams.penalty * self.negativity()
        return ce + penalty_term, ce, penalty_term

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        scores = self(x)
        loss, ce, penalty_term = self.loss(scores, y)
        self.train_acc(scores, y)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_ce", ce)
        self.log("train_penalty", penalty_term)
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        scores = self(x)
        self.val_acc(scores, y)
        self.log(
            "val_loss", cross_entropy(scores, y), prog_bar=True, sync_dist=True
        )  # without the penalty
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        scores = self(x)
        self.test_acc(scores, y)
        self.log("test_loss", cross_entropy(scores, y), sync_dist=True)
        self.log("test_acc", self.test_acc, prog_bar=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Scores of the images of ``batch`` (an ``(images, labels)`` pair or bare images)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        total_steps = self.trainer.estimated_stepping_batches
        if math.isinf(total_steps):
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(total_steps))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class ClassicalMLP(L.LightningModule):
    """The reference for a quantum MLP: ``Linear → ReLU → Linear`` of the same sizes, with
    biases and weights of either sign, trained by Adam (cosine-annealed) on cross-entropy.
    With ``conv``, the first layer is the convolution of a convolutional quantum MLP
    (``Conv2d`` with ``conv``'s channels, kernel and stride), flattened as its neurons are.

    Args:
        hidden: Width of the hidden layer (with ``conv``: ``conv.neurons``).
        lr: Initial learning rate of Adam.
        conv: The geometry of a convolutional first layer (or its ``as_state()``, which the
            hyperparameters keep), or None.
    """

    def __init__(
        self,
        hidden: int = 128,
        lr: float = 3e-3,
        conv: ConvGeometry | dict[str, object] | None = None,
    ) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        conv = checked_geometry(conv)
        if conv is not None and (conv.inputs, conv.neurons) != (pixel_count, hidden):
            raise ValueError(
                f"conv must turn {pixel_count} pixels into hidden={hidden} neurons, got {conv}"
            )
        self.save_hyperparameters(ignore=["conv"])
        self.hparams["conv"] = geometry_state(conv)
        first: nn.Module = nn.Linear(pixel_count, hidden)
        if conv is not None:
            first = nn.Sequential(
                nn.Unflatten(1, (1, *conv.image)),
                nn.Conv2d(1, conv.channels, conv.kernel, conv.stride),
                nn.Flatten(),
            )
        self.net = nn.Sequential(first, nn.ReLU(), nn.Linear(hidden, num_classes))
        self.accuracy = nn.ModuleDict(
            {
                f"{stage}_acc": MulticlassAccuracy(num_classes=num_classes, average="micro")
                for stage in ("train", "val", "test")
            }
        )

    def forward(self, x: Tensor) -> Tensor:
        """Scores (B, 10) of images (B, 1, 28, 28) or (B, 784)."""
        return self.net(x.reshape(x.shape[0], pixel_count))

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        scores = self(x)
        metric = self.accuracy[f"{stage}_acc"]
        metric(scores, y)
        self.log(f"{stage}_acc", metric, prog_bar=True, on_epoch=True)
        return cross_entropy(scores, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
