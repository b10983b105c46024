"""Chains that do not mix: the sampler repairs what it can (the step width, the path's level)
and flags the rest (infinite errors and a StuckChainWarning), never a tiny error."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from qnn_torch import ColdStartWarning, Network, SamplerConfig, StuckChainWarning, simulate
from qnn_torch.functional.exact import single_neuron_activity
from qnn_torch.functional.physics import kink_path
from tests.helpers import PAPER, assert_within

# The probe's case: a relay at 3000 on 32 slices of the paper's time extent and well.
COARSE = {"n_time": 32, "time_extent": 0.7, "lam": 5000.0, "n_kinks": 4}
# The path's level frozen: T·√(2Λ) = 0.1.
SHORT = {**COARSE, "time_extent": 1e-3}


def relay(drive: float | torch.Tensor) -> Network:
    return Network().add_input("x").add_neuron("y").excite("x", "y", torch.as_tensor(drive))


@functools.lru_cache
def exact(lattice: tuple, drive: float) -> float:
    """The exact activity of a relay at ``drive`` on ``lattice`` (items of a lattice dict)."""
    lattice = dict(lattice)
    path = kink_path(**lattice, dtype=torch.float64)
    activity = single_neuron_activity(
        torch.tensor([drive]), None, path, time_extent=lattice["time_extent"], lam=lattice["lam"]
    )
    return float(activity[0])


@pytest.mark.parametrize("step_size", [1e-5, 1e-3, 10.0])
def test_the_step_is_tuned_from_any_width_within_the_thermalisation(step_size: float) -> None:
    """Step 1e-5 gave 1.6e-6 ± 1.8e-7 against 0.5925 (tuning moved the width by at most ×2
    per 10 sweeps); now 30 sweeps tune any start to the width tuned from the default."""
    config = SamplerConfig(
        **COARSE, chains=16, thermalization=30, sweeps=60, algorithm="local", seed=1
    )
    tuned = simulate(relay(3000.0), config).step_size
    result = simulate(relay(3000.0), dataclasses.replace(config, step_size=step_size))
    assert 0.5 < result.step_size / tuned < 2.0
    assert 0.3 < result.acceptance["local"] < 0.7
    assert_within(result.activity["y"], result.stderr["y"], exact(tuple(COARSE.items()), 3000.0))


def test_a_tiny_step_that_is_not_tuned_is_flagged() -> None:
    config = SamplerConfig(
        **COARSE, chains=4, thermalization=0, sweeps=60, algorithm="local", step_size=1e-5
    )
    with (
        pytest.warns(StuckChainWarning, match="accepts 100 % of steps of width 1e-05"),
        pytest.warns(ColdStartWarning),
    ):
        result = simulate(relay(3000.0), config)
    assert torch.isinf(result.stderr["y"]) and torch.isinf(result.autocorrelation_time["y"])


def test_moves_that_accept_almost_nothing_are_flagged() -> None:
    config = SamplerConfig(
        **COARSE, chains=4, thermalization=0, sweeps=40, algorithm="local", step_size=30.0,
        init="equilibrium",
    )  # fmt: skip
    with pytest.warns(StuckChainWarning, match="accept almost nothing"):
        result = simulate(relay(torch.tensor([0.0, 3000.0])), config)
    assert result.acceptance["local"] < 0.01
    assert torch.isinf(result.stderr["y"]).all()


def test_chains_that_have_not_forgotten_their_start_are_flagged() -> None:
    """Local moves alone at the paper's lattice relax over ~400 sweeps: 20 sweeps from the
    vacuum leave every chain drifting up together, which their spread cannot show."""
    config = SamplerConfig(
        **PAPER, chains=8, thermalization=20, sweeps=200, algorithm="local", seed=2
    )
    with pytest.warns(StuckChainWarning, match=r"have not forgotten their start \(2:"):
        result = simulate(relay(torch.tensor([15000.0, 20000.0])), config)
    assert torch.isinf(result.stderr["y"]).all()


@pytest.mark.slow  # the exact reference at T = 1e-3 needs a 1584-point grid: ~6 s
@pytest.mark.parametrize("init", ["vacuum", "spikes"])
def test_the_shift_move_samples_a_frozen_path_level(init: str) -> None:
    """T·√(2Λ) = 0.1: 0.157 ± 0.040 (vacuum) and 0.904 ± 0.033 (spikes) against the exact
    0.6405 without a move of the whole path; "auto" now adds it."""
    config = SamplerConfig(**SHORT, chains=8, thermalization=500, sweeps=500, init=init)
    assert "shift" in config.moves
    result = simulate(relay(3000.0), config)
    assert result.acceptance["shift"] > 0.2
    assert_within(result.activity["y"], result.stderr["y"], exact(tuple(SHORT.items()), 3000.0))


def test_moves_that_cannot_shift_the_path_are_refused_where_it_is_frozen() -> None:
    with pytest.raises(ValueError, match=r"time_extent·√\(2·lam\) = 0.1 < 1.*add '\+shift'"):
        SamplerConfig(**SHORT, algorithm="local+multilevel+cluster")
    assert SamplerConfig(**SHORT, algorithm="local+shift").moves == ("local", "shift")
    assert "shift" not in SamplerConfig(**PAPER).moves  # T·√(2Λ) = 70: not needed
    assert SamplerConfig(**PAPER, algorithm="multilevel+shift").moves == ("multilevel", "shift")
