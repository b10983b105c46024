"""Quantum-aware training: QuantumClassifier trains the couplings through the sampler."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qnn_torch import QuantumNeuronLayer, SamplerConfig
from tests.helpers import SMALL
from training.finetune import QuantumClassifier
from training.transfer import transfer

CONFIG = SamplerConfig(**SMALL, chains=2, thermalization=5, sweeps=10)


def twin_weight() -> torch.Tensor:
    return torch.randn(10, 784, generator=torch.Generator().manual_seed(0))


def fit_one_epoch(model: QuantumClassifier, images: int, seed: int) -> L.Trainer:
    """One epoch on ``images`` random images with random labels (seeded), batches of 8."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(images, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (images,), generator=generator)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=8))
    return trainer


def test_from_twin_and_from_scratch_build_trainable_layers() -> None:
    twin = QuantumClassifier.from_twin(twin_weight(), coupling_scale=0.05, config=CONFIG)
    assert twin.layer.readout == "activity" and twin.layer.weight.requires_grad
    assert twin.couplings.min() == 0 and twin.couplings.max() == 1
    scratch = QuantumClassifier.from_scratch(coupling_scale=0.05, config=CONFIG, seed=3)
    assert scratch.couplings.min() >= 0 and scratch.couplings.max() < 0.1
    again = QuantumClassifier.from_scratch(coupling_scale=0.05, config=CONFIG, seed=3)
    assert torch.equal(scratch.couplings, again.couplings)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr must be > 0"),
        ({"logit_scale": -1.0}, "logit_scale must be > 0"),
        ({"max_total_coupling": float("nan")}, "max_total_coupling must be a finite number"),
        ({"layer": QuantumNeuronLayer(784, 10, config=CONFIG)}, "readout must be 'activity'"),
        ({"layer": QuantumNeuronLayer(5, 10, readout="activity")}, "784 pixels to 10 classes"),
        ({"layer": torch.nn.Linear(784, 10)}, "must be a QuantumNeuronLayer"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    kwargs.setdefault("layer", QuantumNeuronLayer(784, 10, readout="activity", config=CONFIG))
    with pytest.raises(ValueError, match=match):
        QuantumClassifier(**kwargs)


def test_training_moves_the_couplings_and_keeps_them_non_negative() -> None:
    model = QuantumClassifier.from_twin(twin_weight(), coupling_scale=0.05, config=CONFIG, lr=0.3)
    start = model.couplings.clone()
    trainer = fit_one_epoch(model, images=24, seed=0)
    assert trainer.global_step == 3
    # The learning rate is annealed from lr to 0 over the run's steps (cosine).
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == 0.3
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr() == pytest.approx([0.0])
    end = model.couplings
    assert (end >= 0).all()
    assert not torch.equal(end, start)
    # Adam's steps of ~lr push some couplings below 0: the projection puts them at 0.
    assert ((start > 0) & (end == 0)).any()


def test_project_weights_bounds_the_total_by_scaling_down() -> None:
    layer = QuantumNeuronLayer(3, 2, readout="activity", config=CONFIG)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, 1.0]]))
    layer.project_weights_(max_total=12.0)  # Σ = 6 after the clamp: under the bound
    assert layer.weight.tolist() == [[1.0, 0.0, 3.0], [0.5, 0.5, 1.0]]
    layer.project_weights_(max_total=3.0)
    expected = torch.tensor([[0.5, 0.0, 1.5], [0.25, 0.25, 0.5]])
    torch.testing.assert_close(layer.weight.detach(), expected)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_total must be a finite number > 0"):
            layer.project_weights_(max_total=bad)


def test_coupling_budget_bounds_the_sum_from_the_start_and_after_a_step() -> None:
    model = QuantumClassifier.from_twin(
        twin_weight(), coupling_scale=0.05, config=CONFIG, coupling_budget=0.5
    )
    start = float(transfer(twin_weight()).weight.detach().sum())
    assert model.hparams.max_total_coupling == pytest.approx(0.5 * start)
    assert float(model.couplings.sum()) == pytest.approx(0.5 * start, rel=1e-5)
    # From tiny couplings (Σ = 1 of a uniform start), a step of lr = 0.01 per coupling
    # raises the sum by ~0.01 per coupling that goes up (the ones going down stop at 0):
    # far above 1, so the bound scales it back.
    model = QuantumClassifier.from_scratch(
        coupling_scale=0.05, config=CONFIG, lr=0.01, max_total_coupling=1.0
    )
    assert float(model.couplings.sum()) == pytest.approx(1.0, rel=1e-5)
    before = model.couplings.clone()
    trainer = fit_one_epoch(model, images=8, seed=2)
    assert trainer.global_step == 1
    assert not torch.equal(model.couplings, before)
    assert float(model.couplings.sum()) == pytest.approx(1.0, rel=1e-5)
    assert (model.couplings >= 0).all()
    with pytest.raises(ValueError, match="coupling_budget must be a finite number > 0"):
        QuantumClassifier.from_twin(twin_weight(), config=CONFIG, coupling_budget=0.0)
    with pytest.raises(ValueError, match=r"coupling_budget=1e\+308 times the transferred sum"):
        QuantumClassifier.from_twin(twin_weight(), config=CONFIG, coupling_budget=1e308)
    with pytest.raises(ValueError, match="not both"):
        QuantumClassifier.from_twin(
            twin_weight(), config=CONFIG, coupling_budget=1.0, max_total_coupling=3.0
        )


def test_calibrated_logit_scale_maps_activities_onto_the_twin_logits() -> None:
    weight = twin_weight()
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    config = SamplerConfig(**SMALL, chains=4, thermalization=50, sweeps=200)
    model = QuantumClassifier.from_twin(
        weight, coupling_scale=0.3, config=config, calibration_images=images
    )
    scale = float(model.logit_scale)
    with torch.no_grad():
        activity = model.layer(images.flatten(1))
    a = activity - activity.mean(-1, keepdim=True)
    z = images.flatten(1) @ weight.T
    z = z - z.mean(-1, keepdim=True)
    # The least-squares optimum: the residual is orthogonal to the activities.
    torch.testing.assert_close((a * (z - scale * a)).sum(), torch.tensor(0.0), atol=1e-3, rtol=0)
    assert scale > 0


def test_training_without_an_end_is_refused() -> None:
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    loader = DataLoader(TensorDataset(images, torch.zeros(4, dtype=torch.long)), batch_size=2)
    model = QuantumClassifier.from_twin(twin_weight(), coupling_scale=0.05, config=CONFIG)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="give the Trainer max_epochs or max_steps"):
        trainer.fit(model, train_dataloaders=loader)
