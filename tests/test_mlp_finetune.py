"""Fine-tuning a QuantumMLPClassifier through its Monte Carlo: a real Lightning step
descends exactly the sampled covariance gradients of the outputs, seeded per step."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from qnn_torch import SamplerConfig
from tests.helpers import SMALL
from tests.test_twin import SMALL_GRID
from training.quantum_mlp import QuantumMLPClassifier, switched

CONFIG = SamplerConfig(
    **SMALL, chains=4, thermalization=10, sweeps=20, max_sweeps=60, init="spikes"
)
TRAIN = dataclasses.replace(CONFIG, thermalization=5, sweeps=10, max_sweeps=0, seed=11)


def classifier(**kwargs: object) -> QuantumMLPClassifier:
    settings = {"config": CONFIG, "train_sampler": TRAIN, "twin_grid": SMALL_GRID, "seed": 3}
    return QuantumMLPClassifier((12, 5, 3), **(settings | kwargs))


class Gradients(L.Callback):
    """The gradients of each optimiser step, before the step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        named = module.named_parameters()
        self.steps.append({n: p.grad.clone() for n, p in named if p.grad is not None})


def test_monte_carlo_steps_descend_the_sampled_gradients():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(8, 12, generator=generator)
    labels = torch.randint(0, 3, (8,), generator=generator)
    model = classifier(train_estimator="monte_carlo", lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # What the first step must see: the outputs sampled with the step's seed (step 0).
    with switched(
        model.mlp, estimator="monte_carlo", decision_sigmas=0.0, conditional_every=0, config=TRAIN
    ):
        loss = F.cross_entropy(model.logit_scale * model.mlp(images), labels)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss, list(trainable.values()))
    expected = dict(zip(trainable, grads, strict=True))
    assert all(g.ne(0).any() for g in expected.values())

    recorder = Gradients()
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    trainer.fit(model, train_dataloaders=loader)
    assert set(recorder.steps[0]) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(recorder.steps[0][name], grad, rtol=1e-5, atol=1e-7)
    # The second step samples a new stream: other gradients.
    assert not torch.equal(recorder.steps[1]["mlp.excite.1"], recorder.steps[0]["mlp.excite.1"])
    # The couplings moved, stayed >= 0, and the network is the twin again between steps.
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all((w >= 0).all() for w in model.mlp.parameters())
    assert model.mlp.estimator == "twin" and model.mlp.config == CONFIG


def test_fine_tuning_settings_are_checked():
    with pytest.raises(ValueError, match="train_estimator"):
        classifier(train_estimator="exact")
    with pytest.raises(ValueError, match=r"train_sampler\.lam=100\.0 must be config\.lam=60\.0"):
        classifier(train_sampler=dataclasses.replace(TRAIN, lam=100.0))
