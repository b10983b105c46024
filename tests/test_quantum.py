"""training.quantum: batches dealt to processes, and the quantum LightningModule."""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from qnn_torch.config import SamplerConfig
from tests.helpers import SMALL, Numbered, twin_like_weight
from training.quantum import IndexedBatches, QuantumEvaluator, quantum_loader, quantum_subset

CONFIG = SamplerConfig(**SMALL, chains=2, thermalization=5, sweeps=10)


@pytest.mark.filterwarnings("ignore:Your `IterableDataset` has `__len__` defined")
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
        name: (1,) for name in ("index", "label", "classical", "quantum", "exact")
    }
    assert evaluator.predictions["label"].tolist() == [3]


def images(n: int, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=generator) ** 3
    return [(x[i], i % 10) for i in range(n)]


def test_indexed_batches_deal_whole_batches_without_repeats() -> None:
    data = images(23)
    single = list(IndexedBatches(data, 5))
    assert [start for *_, start in single] == [0, 5, 10, 15, 20]
    assert IndexedBatches(data, 5).batch_bounds() == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    shards = [list(IndexedBatches(data, 5, rank=r, world_size=2)) for r in range(2)]
    assert [start for *_, start in shards[0]] == [0, 10, 20]
    assert [start for *_, start in shards[1]] == [5, 15]
    by_start = {start: (x, y) for shard in shards for x, y, start in shard}
    for x, y, start in single:
        assert torch.equal(by_start[start][0], x) and torch.equal(by_start[start][1], y)
    assert len(IndexedBatches(data, 5, rank=1, world_size=2)) == 2


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 500])
@pytest.mark.parametrize("batch_size", [2, 500])
def test_every_process_gets_a_batch_and_every_image_once(
    size: int, world_size: int, batch_size: int
) -> None:
    """Too few images for a batch each (500 images, batches of 500, 2 processes: the
    pipeline's --quantum_test_size 500 --devices 2) are split between the processes; a
    process without images gets an empty batch, which keeps it in step with the others."""
    seen: list[int] = []
    for rank in range(world_size):
        shard = IndexedBatches(Numbered(size), batch_size, rank=rank, world_size=world_size)
        batches = list(shard)
        assert batches, f"rank {rank} of {world_size} has no batch"
        assert len(batches) == len(shard)
        for x, y, start in batches:
            assert x.shape == (len(y), 1)
            indices = x.flatten().long().tolist()
            assert indices == list(range(start, start + len(y)))
            assert y.tolist() == [i % 10 for i in indices]
            seen += indices
    assert sorted(seen) == list(range(size))


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
        ("exact_acc", (predictions["exact"] == labels).float().mean()),
        ("classical_acc", (predictions["classical"] == labels).float().mean()),
        ("agreement", (predictions["quantum"] == predictions["classical"]).float().mean()),
    ):
        assert metrics[name] == pytest.approx(value.item())
    assert set(evaluator.confusion_matrices) == {"classical", "quantum", "exact"}
    for name, matrix in evaluator.confusion_matrices.items():
        expected = torch.zeros(10, 10, dtype=torch.long)
        expected.index_put_((labels, predictions[name]), torch.ones(30, dtype=torch.long), True)
        assert torch.equal(matrix, expected), name  # rows: true digit; columns: prediction


@pytest.mark.filterwarnings("ignore:Your `IterableDataset` has `__len__` defined")
def test_an_empty_batch_updates_no_metric() -> None:
    """A process with no image (fewer images than processes) tests an empty batch."""
    data = images(3)
    empty, _, _ = next(iter(IndexedBatches(data, 8, rank=0, world_size=4)))
    assert empty.shape == (0, 1, 28, 28)
    x = torch.stack([image for image, _ in data])
    y = torch.tensor([label for _, label in data])
    batches = [(empty, torch.empty(0, dtype=torch.long), 0), (x, y, 0)]
    evaluator = QuantumEvaluator(twin_like_weight(), coupling_scale=0.2, config=CONFIG)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.test(evaluator, dataloaders=DataLoader(batches, batch_size=None), verbose=False)
    assert evaluator.predictions["index"].tolist() == [0, 1, 2]
    assert int(evaluator.confusion_matrices["quantum"].sum()) == 3


def test_quantum_subset_is_a_seeded_sorted_sample() -> None:
    data = Numbered(50)
    subset = quantum_subset(data, 10, seed=3)
    assert len(subset) == 10 and list(subset.indices) == sorted(subset.indices)
    assert list(quantum_subset(data, 10, seed=3).indices) == list(subset.indices)
    assert list(quantum_subset(data, 10, seed=4).indices) != list(subset.indices)
    assert list(quantum_subset(data, 50, seed=3).indices) == list(range(50))
