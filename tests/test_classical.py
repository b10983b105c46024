"""Tests of the classical twin: penalty, loss, logging and non-negativity after training."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, TensorDataset

from qnn_torch.functional.conv import ConvGeometry
from training.classical import ClassicalMLP, ClassicalTwin


def _separable_data(n: int = 512) -> TensorDataset:
    """Images in [0, 1] whose class lights up its own block of 78 pixels, plus dim noise."""
    labels = torch.arange(n) % 10
    images = 0.3 * torch.rand(n, 784)
    for c in range(10):
        images[labels == c, 78 * c : 78 * (c + 1)] += 0.7
    return TensorDataset(images.reshape(n, 1, 28, 28), labels)


def _trainer(max_steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _mean_cross_entropy(model: ClassicalTwin, data: TensorDataset) -> float:
    images, labels = data.tensors
    with torch.no_grad():
        return cross_entropy(model(images), labels).item()


def test_shapes_and_weight() -> None:
    model = ClassicalTwin()
    assert model.weight.shape == (10, 784)
    assert model.weight is model.linear.weight
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(model(x), model(x.reshape(3, 784)))
    torch.testing.assert_close(model(x), x.reshape(3, 784) @ model.weight.T)
    torch.testing.assert_close(model.predict_step((x, torch.zeros(3)), 0), model(x))
    torch.testing.assert_close(model.predict_step(x, 0), model(x))


def test_convolutional_reference_is_the_geometry() -> None:
    conv = ConvGeometry(image=28, channels=3, kernel=10, stride=6)
    model = ClassicalMLP(conv.neurons, conv=conv)
    x = torch.rand(2, 1, 28, 28)
    first = model.net[0][1]
    assert first.weight.shape == (3, 1, 10, 10) and first.stride == (6, 6)
    hidden = torch.relu(torch.nn.functional.conv2d(x, first.weight, first.bias, stride=6))
    torch.testing.assert_close(model(x), model.net[2](hidden.flatten(1)))
    with pytest.raises(ValueError, match="conv must turn 784 pixels into hidden=10"):
        ClassicalMLP(10, conv=conv)


def test_hyperparameters_saved() -> None:
    model = ClassicalTwin(penalty=5.0, lr=0.1, weight_decay=1e-4)
    assert (model.hparams.penalty, model.hparams.lr, model.hparams.weight_decay) == (5.0, 0.1, 1e-4)


@pytest.mark.parametrize("kwargs", [{"penalty": -1.0}, {"lr": 0.0}, {"weight_decay": -0.1}])
def test_invalid_hyperparameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ClassicalTwin(**kwargs)


def test_penalty_on_hand_made_weight() -> None:
    model = ClassicalTwin(penalty=7.0)
    weight = torch.zeros(10, 784)
    weight[0, 0], weight[3, 5], weight[9, 783] = -2.0, -0.5, 3.0
    with torch.no_grad():
        model.weight.copy_(weight)
    assert model.negativity().item() == pytest.approx(2.5)

    L.seed_everything(0)
    x, y = torch.rand(4, 784), torch.tensor([0, 3, 9, 1])
    scores = model(x)
    loss, ce, penalty_term = model.loss(scores, y)
    assert penalty_term.item() == pytest.approx(7.0 * 2.5)
    assert ce.item() == pytest.approx(cross_entropy(x @ weight.T, y).item(), rel=1e-6)
    assert loss.item() == pytest.approx(ce.item() + 7.0 * 2.5, rel=1e-6)


def test_penalty_vanishes_for_non_negative_weight() -> None:
    model = ClassicalTwin()
    assert model.negativity().item() == 0.0


def test_training_reduces_loss_and_logs() -> None:
    L.seed_everything(0)
    data = _separable_data()
    model = ClassicalTwin()
    before = _mean_cross_entropy(model, data)
    trainer = _trainer(max_steps=20)
    loader = DataLoader(data, batch_size=64, shuffle=True)
    trainer.fit(model, loader, DataLoader(data, batch_size=256))
    after = _mean_cross_entropy(model, data)
    assert after < 0.5 * before
    assert {"train_loss", "train_penalty", "val_loss", "val_acc"} <= trainer.callback_metrics.keys()

    (result,) = trainer.test(model, DataLoader(data, batch_size=256), verbose=False)
    assert result["test_acc"] > 0.95
    scores = torch.cat(trainer.predict(model, DataLoader(data, batch_size=256)))
    assert scores.shape == (len(data), 10)


@pytest.mark.parametrize("penalty", [0.0, 100.0])
def test_large_penalty_keeps_weights_non_negative(penalty: float) -> None:
    # Starting from zero weights, the cross-entropy drives many weights negative; a large
    # penalty must keep them at >= -1e-3 max|W| (without it, some end clearly negative).
    L.seed_everything(0)
    data = _separable_data()
    model = ClassicalTwin(penalty=penalty, init_value=0.0)
    _trainer(max_steps=40).fit(model, DataLoader(data, batch_size=64, shuffle=True))
    weight = model.weight.detach()
    bound = -1e-3 * weight.abs().max()
    if penalty:
        assert weight.min() >= bound
        assert _mean_cross_entropy(model, data) < 0.1
    else:
        assert weight.min() < 100 * bound
