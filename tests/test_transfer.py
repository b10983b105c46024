"""Weight transfer (normalisation, per-pixel shift) and the quantum LightningModule."""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import pytest
import torch
from torch import nn

from qnn_torch.config import SamplerConfig
from tests.conftest import SMALL
from training.quantum import IndexedBatches, QuantumEvaluator, quantum_loader
from training.transfer import DEFAULT_COUPLING_SCALE, shift_per_pixel, transfer, transferred_weight

CONFIG = SamplerConfig(**SMALL, chains=2, thermalization=5, sweeps=10)


def twin_like_weight(seed: int = 0) -> torch.Tensor:
    """A (10, 784) weight like a trained twin's: a common offset ≈ 1 plus per-pixel structure."""
    generator = torch.Generator().manual_seed(seed)
    return (
        1.0
        + 0.3 * torch.randn(10, 784, generator=generator)
        + torch.rand(1, 784, generator=generator)
    )


@pytest.mark.parametrize("per_pixel_shift", [True, False])
def test_normalised_range(per_pixel_shift: bool) -> None:
    couplings = transferred_weight(twin_like_weight(), per_pixel_shift=per_pixel_shift)
    assert couplings.shape == (10, 784)
    assert couplings.min() == 0 and couplings.max() == 1


def test_shift_per_pixel_zeroes_each_pixels_minimum() -> None:
    shifted = shift_per_pixel(twin_like_weight())
    assert (shifted >= 0).all()
    torch.testing.assert_close(shifted.min(dim=0).values, torch.zeros(784))


def test_shift_is_an_exact_symmetry_of_the_classical_softmax() -> None:
    weight, x = twin_like_weight().double(), torch.rand(64, 784, dtype=torch.float64)
    torch.testing.assert_close(
        (x @ shift_per_pixel(weight).T).softmax(-1), (x @ weight.T).softmax(-1)
    )


@pytest.mark.parametrize("per_pixel_shift", [True, False])
def test_transfer_keeps_the_classical_argmax(per_pixel_shift: bool) -> None:
    weight, x = twin_like_weight(), torch.rand(256, 784, dtype=torch.float64)
    couplings = transferred_weight(weight.double(), per_pixel_shift=per_pixel_shift)
    assert torch.equal((x @ couplings.T).argmax(-1), (x @ weight.double().T).argmax(-1))


def test_shift_lowers_the_drives() -> None:
    weight, x = twin_like_weight(), torch.rand(32, 784)
    shifted = x @ transferred_weight(weight).T
    assert (
        shifted.mean() < 0.8 * (x @ transferred_weight(weight, per_pixel_shift=False).T).mean()
    ).item()


def test_transfer_builds_the_layer() -> None:
    linear = nn.Linear(784, 10, bias=False)
    layer = transfer(linear, config=CONFIG)
    assert float(layer.coupling_scale) == DEFAULT_COUPLING_SCALE
    assert layer.config is CONFIG
    torch.testing.assert_close(layer.weight.data, transferred_weight(linear.weight))
    with pytest.raises(ValueError, match="weight"):
        transfer(torch.ones(784))


def images(n: int, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=generator) ** 3
    return [(x[i], i % 10) for i in range(n)]


def test_indexed_batches_deal_whole_batches_without_repeats() -> None:
    data = images(23)
    single = list(IndexedBatches(data, 5))
    assert [start for *_, start in single] == [0, 5, 10, 15, 20]
    shards = [list(IndexedBatches(data, 5, rank=r, world_size=2)) for r in range(2)]
    assert [start for *_, start in shards[0]] == [0, 10, 20]
    assert [start for *_, start in shards[1]] == [5, 15]
    by_start = {start: (x, y) for shard in shards for x, y, start in shard}
    for x, y, start in single:
        assert torch.equal(by_start[start][0], x) and torch.equal(by_start[start][1], y)
    assert len(IndexedBatches(data, 5, rank=1, world_size=2)) == 2
    with pytest.raises(ValueError, match="fewer than the 3 processes"):
        len(IndexedBatches(data, 20, rank=0, world_size=3))


def test_batch_seed_is_base_seed_plus_first_index() -> None:
    evaluator = QuantumEvaluator(twin_like_weight(), coupling_scale=0.2, config=CONFIG)
    x = torch.stack([image for image, _ in images(4)])
    first = evaluator(x, 0)
    torch.testing.assert_close(evaluator(x, 0), first, rtol=0, atol=0)
    assert not torch.equal(evaluator(x, 4), first)
    shifted = QuantumEvaluator(
        twin_like_weight(), coupling_scale=0.2, config=replace(CONFIG, seed=4)
    )
    torch.testing.assert_close(shifted(x, 0), evaluator(x, 4), rtol=0, atol=0)


def test_predictions_do_not_depend_on_sharding() -> None:
    evaluator = QuantumEvaluator(twin_like_weight(), coupling_scale=0.2, config=CONFIG)
    data = images(20)

    def predict(rank: int, world: int) -> dict[int, torch.Tensor]:
        batches = IndexedBatches(data, 4, rank=rank, world_size=world)
        outputs = [evaluator.predict_step(batch, i) for i, batch in enumerate(batches)]
        return {
            int(i): q for out in outputs for i, q in zip(out["index"], out["quantum"], strict=True)
        }

    single = predict(0, 1)
    sharded = {**predict(0, 2), **predict(1, 2)}
    assert sorted(sharded) == list(range(20))
    for index, scores in single.items():
        torch.testing.assert_close(sharded[index], scores, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Your `IterableDataset` has `__len__` defined")
def test_trainer_test_logs_metrics_and_gathers_predictions() -> None:
    data = images(30)
    evaluator = QuantumEvaluator(twin_like_weight(), coupling_scale=0.2, config=CONFIG)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = trainer.test(evaluator, dataloaders=quantum_loader(data, 8), verbose=False)[0]
    predictions = evaluator.predictions
    assert torch.equal(predictions["index"], torch.arange(30))
    assert torch.equal(predictions["label"], torch.arange(30) % 10)
    x = torch.stack([image for image, _ in data])
    assert torch.equal(predictions["classical"], evaluator.classical_scores(x).argmax(-1))
    labels = predictions["label"]
    for name, value in (
        ("quantum_acc", (predictions["quantum"] == labels).float().mean()),
        ("classical_acc", (predictions["classical"] == labels).float().mean()),
        ("agreement", (predictions["quantum"] == predictions["classical"]).float().mean()),
    ):
        assert metrics[name] == pytest.approx(value.item())
