"""training.transfer: normalisation, per-pixel shift and the transferred layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qnn_torch.config import SamplerConfig
from tests.helpers import SMALL, twin_like_weight
from training.transfer import DEFAULT_COUPLING_SCALE, shift_per_pixel, transfer, transferred_weight

CONFIG = SamplerConfig(**SMALL, chains=2, thermalization=5, sweeps=10)


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
