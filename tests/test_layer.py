"""Contract of QuantumNeuronLayer: shapes, devices, dtypes, determinism, errors, state, readouts."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from qnn_torch.config import SamplerConfig
from qnn_torch.functional.layer import normalize_weights
from qnn_torch.module.layer import QuantumNeuronLayer
from tests.helpers import SMALL

# A small lattice and short chains: the contract, not the physics, is under test here.
CONFIG = SamplerConfig(**SMALL, chains=2, thermalization=5, sweeps=10)


def make_layer(in_features: int = 6, out_features: int = 3, **kwargs: object) -> QuantumNeuronLayer:
    torch.manual_seed(0)
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("coupling_scale", 5.0)
    return QuantumNeuronLayer(in_features, out_features, **kwargs)


@pytest.mark.parametrize("batch_shape", [(), (4,), (2, 3)])
def test_leading_dims(batch_shape: tuple[int, ...]) -> None:
    layer = make_layer()
    x = torch.rand(*batch_shape, 6)
    scores = layer(x)
    assert scores.shape == (*batch_shape, 3)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_follows_input(dtype: torch.dtype) -> None:
    layer = make_layer()
    assert layer(torch.rand(2, 6, dtype=dtype)).dtype == dtype


@pytest.mark.cuda
def test_cuda_device() -> None:
    layer = make_layer().cuda()
    x = torch.rand(2, 6, device="cuda")
    scores = layer(x)
    assert scores.device.type == "cuda"
    assert scores.shape == (2, 3)


def test_same_seed_same_output_other_seed_differs() -> None:
    x = torch.rand(3, 6)
    first = make_layer(readout="activity")(x)
    torch.testing.assert_close(make_layer(readout="activity")(x), first, rtol=0, atol=0)
    other = make_layer(readout="activity", config=replace(CONFIG, seed=1))
    assert not torch.equal(other(x), first)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.rand(2, 5), "in_features=6"),
        (torch.full((2, 6), 1.5), "input brightnesses must lie in \\[0, 1\\]"),
        (torch.full((2, 6), -0.1), "input brightnesses must lie in \\[0, 1\\]"),
        (torch.full((2, 6), float("nan")), "input contains NaN"),
    ],
)
def test_invalid_input(x: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_layer()(x)


@pytest.mark.parametrize("name", ["coupling_scale", "lateral_inhibition"])
def test_bool_strengths_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0, got True"):
        QuantumNeuronLayer(6, 3, **{name: True})


def test_readout_reassignment_is_checked_before_sampling() -> None:
    layer = make_layer()
    layer.readout = "activity"
    assert layer.readout == "activity"
    with pytest.raises(ValueError, match="readout must be one of"):
        layer.readout = "logits"
    assert layer.readout == "activity"


def test_drives_keep_the_input_dtype_under_autocast() -> None:
    layer, x = make_layer(), torch.rand(2, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        drive = layer.drives(x)
    assert drive.dtype == torch.float32
    torch.testing.assert_close(drive, layer.drives(x), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_normalize_weights_refuses_non_finite_weights(bad: float) -> None:
    weight = torch.tensor([[0.2, bad], [0.5, 1.0]])
    with pytest.raises(ValueError, match="1 non-finite"):
        normalize_weights(weight)
    with pytest.raises(ValueError, match="non-empty"):
        normalize_weights(torch.empty(0, 3))


def test_negative_weight_rejected() -> None:
    layer = make_layer()
    with torch.no_grad():
        layer.weight[0, 0] = -0.5
    with pytest.raises(ValueError, match="weight must be finite and >= 0"):
        layer(torch.rand(2, 6))


def test_state_dict_round_trip() -> None:
    source = make_layer(coupling_scale=7.0, readout="activity")
    target = QuantumNeuronLayer(6, 3, readout="activity", config=CONFIG)
    target.load_state_dict(source.state_dict())
    assert float(target.coupling_scale) == 7.0
    x = torch.rand(3, 6)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_drop_in_after_flatten_on_mnist_shaped_batches() -> None:
    model = nn.Sequential(
        nn.Flatten(), QuantumNeuronLayer(784, 10, coupling_scale=0.05, config=CONFIG)
    )
    scores = model(torch.rand(5, 1, 28, 28))
    assert scores.shape == (5, 10)
    torch.testing.assert_close(scores.sum(-1), torch.ones(5))


def test_extra_repr() -> None:
    text = repr(make_layer())
    for part in ("in_features=6", "out_features=3", "coupling_scale=5", "readout='softmax'"):
        assert part in text
    assert "lateral_inhibition=1e-17 (negligible: skipped)" in text


@pytest.mark.parametrize("readout", ["softmax", "born"])
def test_normalised_readouts_sum_to_one(readout: str) -> None:
    scores = make_layer(readout=readout)(torch.rand(4, 6))
    assert (scores >= 0).all()
    torch.testing.assert_close(scores.sum(-1), torch.ones(4))


def test_activity_readout_is_the_activity_behind_softmax() -> None:
    x = torch.rand(4, 6)
    activity = make_layer(readout="activity")(x)
    torch.testing.assert_close(make_layer(readout="softmax")(x), activity.softmax(-1))


def test_inhibition_simulated_only_when_not_negligible() -> None:
    x = torch.ones(4, 6)
    config = SamplerConfig(**SMALL, chains=4, thermalization=20, sweeps=60)
    free = make_layer(readout="activity", lateral_inhibition=1e-17, config=config)
    inhibited = make_layer(readout="activity", lateral_inhibition=100.0, config=config)
    assert not free.simulates_inhibition
    assert inhibited.simulates_inhibition
    for layer in (free, inhibited):
        with torch.no_grad():
            layer.weight.fill_(0.5)
    # Measured: mean activity 0.89 without inhibition, 0.67 with it (std of a mean ~0.02).
    assert inhibited(x).mean() < free(x).mean() - 0.1


def test_from_classical_normalises_weights() -> None:
    weight = torch.randn(3, 6)
    layer = QuantumNeuronLayer.from_classical(nn.Linear(6, 3), config=CONFIG)
    assert layer.weight.min() == 0 and layer.weight.max() == 1
    layer = QuantumNeuronLayer.from_classical(weight, config=CONFIG)
    torch.testing.assert_close(
        layer.weight.data, (weight - weight.min()) / (weight - weight.min()).max()
    )


def test_float64_input_with_simulated_inhibition_and_empty_batch():
    config = SamplerConfig(
        n_time=32, time_extent=2.0, lam=60.0, n_kinks=2, chains=2, thermalization=5, sweeps=5
    )
    layer = QuantumNeuronLayer(3, 2, lateral_inhibition=10.0, readout="activity", config=config)
    assert layer.simulates_inhibition
    out = layer(torch.rand(4, 3, dtype=torch.float64))
    assert out.shape == (4, 2) and out.dtype == torch.float64
    empty = layer(torch.rand(0, 3))
    assert empty.shape == (0, 2) and empty.dtype == torch.float32
