"""Command lines and outputs of the scripts' library modules: bad input fails before work."""

from __future__ import annotations

import lightning as L
import torch

from qnn_torch.config import SamplerConfig
from training.quantum import QuantumEvaluator, quantum_loader


def test_evaluating_one_image_gives_one_prediction() -> None:
    """CatMetric returns a 0-d tensor for a single value; the predictions stay 1-d."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.rand(10, 784, generator=generator)
    image = torch.rand(1, 28, 28, generator=generator)
    config = SamplerConfig(chains=2, thermalization=0, sweeps=1)
    evaluator = QuantumEvaluator(weight, coupling_scale=100.0, config=config)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.test(evaluator, dataloaders=quantum_loader([(image, 3)], 10), verbose=False)
    assert {name: value.shape for name, value in evaluator.predictions.items()} == {
        name: (1,) for name in ("index", "label", "classical", "quantum")
    }
    assert evaluator.predictions["label"].tolist() == [3]
