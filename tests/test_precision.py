"""Precision on demand: measurement in blocks until a target error or a stop criterion.

Networks that are done leave the simulation; each reports the sweeps it measured. Every
Monte Carlo estimate is compared with the exact transfer-matrix reference within 4
standard errors, with a fixed seed.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from qnn_torch import Network, SamplerConfig, StuckChainWarning, grad_with_stderr, simulate
from qnn_torch.simulate import run_sampler
from tests.helpers import SMALL, assert_within, exact_activity

BLOCK = {**SMALL, "chains": 16, "thermalization": 100, "sweeps": 100, "seed": 3}


def relay(strength: float | torch.Tensor) -> Network:
    return Network().add_input("x").add_neuron("y").excite("x", "y", strength)


def test_target_stderr_is_met_or_the_cap_is_reported_and_agrees_with_exact():
    drives = torch.tensor([2.0, 30.0, 120.0])
    config = SamplerConfig(**BLOCK, target_stderr=0.012, max_sweeps=1500)
    result = simulate(relay(drives), config)
    sweeps, stderr = result.sweeps, result.stderr["y"]
    assert sweeps.dtype == torch.int64 and sweeps.shape == drives.shape
    assert ((sweeps % 100 == 0) & (sweeps >= 100) & (sweeps <= 1500)).all()
    assert ((stderr <= 0.012) | (sweeps == 1500)).all(), (stderr, sweeps)
    assert (stderr > 0).all()
    assert_within(result.activity["y"], stderr, exact_activity(SMALL, drives))


def test_networks_of_different_difficulty_use_different_sweeps():
    # Without a drive the neuron sits in its wells (small spread); at 60 it tunnels.
    config = SamplerConfig(**BLOCK, target_stderr=0.012, max_sweeps=3000)
    result = simulate(relay(torch.tensor([0.0, 60.0])), config)
    easy, hard = result.sweeps.tolist()
    assert easy < hard, (easy, hard)
    assert (result.stderr["y"] <= 0.012).all()


def test_an_unreachable_target_stops_at_max_sweeps_and_says_so():
    config = SamplerConfig(**BLOCK, target_stderr=1e-6, max_sweeps=250)
    result = simulate(relay(60.0), config)
    assert result.sweeps.shape == () and int(result.sweeps) == 250  # last block cut at 250
    assert float(result.stderr["y"]) > 1e-6


def test_a_target_met_at_once_changes_nothing_but_the_mode():
    # The first block of the block mode is the plain run: same random numbers.
    plain = SamplerConfig(**BLOCK)
    drives = torch.tensor([0.0, 60.0])
    expected = simulate(relay(drives), plain, record_profile=True)
    block = dataclasses.replace(plain, target_stderr=10.0, max_sweeps=1000)
    result = simulate(relay(drives), block, record_profile=True)
    assert result.sweeps.tolist() == [100, 100] and expected.sweeps.tolist() == [100, 100]
    assert torch.equal(result.paths, expected.paths)
    assert torch.equal(result.potential_profile, expected.potential_profile)
    assert torch.equal(result.chain_activity, expected.chain_activity)
    for field in ("activity", "stderr", "autocorrelation_time"):
        assert torch.equal(getattr(result, field)["y"], getattr(expected, field)["y"]), field


def test_stop_when_stops_networks_early_and_the_others_stay_correct():
    drives = torch.tensor([0.0, 60.0, 120.0])
    # Seed 4: with the numbers of the Box–Muller pairs, seed 3's third network lands at
    # z = 4.1 (one of 36 seeds above 4, 0 of 36 before; 5 runs of 256 chains: |z| < 1.8).
    config = SamplerConfig(**{**BLOCK, "seed": 4}, max_sweeps=800)
    compiled = relay(drives).compile(config)
    seen = []

    def stop_first(
        activity: torch.Tensor, stderr: torch.Tensor, chain_activity: torch.Tensor
    ) -> torch.Tensor:
        seen.append((activity, stderr, chain_activity))
        return torch.tensor([True, False, False])

    out = run_sampler(compiled, config, stop_when=stop_first, record_profile=True)
    assert out.sweeps.tolist() == [100, 800, 800]
    assert len(seen) == 7  # after blocks 1 … 7; the 8th ends at max_sweeps
    assert all(a.shape == e.shape == (3, 1) and c.shape == (3, 16, 1) for a, e, c in seen)
    torch.testing.assert_close(seen[0][2].mean(1), seen[0][0], rtol=1e-12, atol=0.0)
    assert torch.equal(seen[-1][0][0], out.activity[0])  # the stopped network is frozen
    # The stopped network's results are those of a plain run of one block.
    plain = run_sampler(compiled, dataclasses.replace(config, max_sweeps=0), record_profile=True)
    for field in ("activity", "stderr", "chain_activity", "paths", "potential_profile"):
        assert torch.equal(getattr(out, field)[0], getattr(plain, field)[0]), field
    assert_within(out.activity[:, 0], out.stderr[:, 0], exact_activity(SMALL, drives))
    assert (out.stderr[1:] < plain.stderr[1:]).all()  # eight times the sweeps
    # Each network's profile is averaged over its own sweeps: Σ_t ⟨V0⟩ / norm = A.
    profile_activity = out.potential_profile.double().sum(-1) / compiled.activity_norm
    torch.testing.assert_close(profile_activity, out.activity, rtol=1e-5, atol=0.0)
    assert torch.isfinite(out.autocorrelation_time).all()


def test_stop_when_and_target_stderr_each_suffice():
    drives = torch.tensor([0.0, 60.0])
    config = SamplerConfig(**BLOCK, target_stderr=1e-6, max_sweeps=400)
    never = run_sampler(relay(drives).compile(config), config)
    assert never.sweeps.tolist() == [400, 400]
    out = run_sampler(
        relay(drives).compile(config),
        config,
        stop_when=lambda activity, stderr, chains: activity[:, 0] < 1.0,  # exact: 0.72, 1.80
    )
    assert out.sweeps.tolist() == [100, 400]


def test_block_mode_is_deterministic():
    config = SamplerConfig(**BLOCK, target_stderr=0.02, max_sweeps=1000)
    drives = torch.tensor([0.0, 30.0, 120.0])
    first, again = simulate(relay(drives), config), simulate(relay(drives), config)
    assert len(set(first.sweeps.tolist())) > 1  # networks did stop at different blocks
    assert torch.equal(first.sweeps, again.sweeps)
    assert torch.equal(first.paths, again.paths)
    assert torch.equal(first.activity["y"], again.activity["y"])
    assert torch.equal(first.stderr["y"], again.stderr["y"])
    other = simulate(relay(drives), dataclasses.replace(config, seed=4))
    assert not torch.equal(first.paths, other.paths)


def test_block_mode_gradients_match_the_exact_derivative():
    strength = torch.tensor([5.0, 20.0, 60.0], dtype=torch.float64, requires_grad=True)
    config = SamplerConfig(**BLOCK, target_stderr=0.012, max_sweeps=2000)
    result = simulate(relay(strength), config)
    assert len(set(result.sweeps.tolist())) > 1
    (slope,), (error,) = grad_with_stderr(result.activity["y"].sum(), [strength])
    eps = strength.detach()
    step = 0.01 * eps
    exact = (exact_activity(SMALL, eps + step) - exact_activity(SMALL, eps - step)) / (2 * step)
    assert (error > 0).all() and torch.isfinite(error).all()
    assert_within(slope, error, exact)


def test_stuck_networks_never_stop_early_and_are_flagged():
    config = SamplerConfig(
        **{**BLOCK, "thermalization": 0, "sweeps": 20},
        algorithm="local",
        step_size=1e6,
        target_stderr=0.5,
        max_sweeps=60,
    )
    with pytest.warns(StuckChainWarning, match="never changed"):
        result = simulate(relay(torch.tensor([0.0, 120.0])), config)
    assert result.sweeps.tolist() == [60, 60]  # a zero spread is no error estimate
    assert torch.isinf(result.stderr["y"]).all()
    assert torch.isinf(result.autocorrelation_time["y"]).all()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"target_stderr": -0.1}, r"target_stderr must be finite and >= 0 .*-0\.1"),
        ({"target_stderr": math.nan}, "target_stderr must be finite and >= 0 .*nan"),
        ({"target_stderr": math.inf}, "target_stderr must be finite and >= 0 .*inf"),
        ({"target_stderr": "0.1"}, "target_stderr must be a Python number .*'0.1'"),
        ({"target_stderr": True}, "target_stderr must be a Python number .*True"),
        ({"target_stderr": torch.tensor(0.1)}, "target_stderr must be a Python number"),
        ({"max_sweeps": -1}, "max_sweeps must be an integer >= 0, got -1"),
        ({"max_sweeps": 2.5}, "max_sweeps must be an integer >= 0, got 2.5"),
        ({"max_sweeps": 50}, "max_sweeps must be 0 .* or >= sweeps=100, got 50"),
        ({"target_stderr": 0.01}, "target_stderr=0.01 needs max_sweeps > sweeps=100.*got max"),
        ({"target_stderr": 0.01, "max_sweeps": 100}, "needs max_sweeps > sweeps=100"),
    ],
)
def test_precision_settings_are_validated(fields, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**BLOCK, **fields)


def test_max_sweeps_alone_is_allowed():
    assert SamplerConfig(**BLOCK, max_sweeps=100).max_sweeps == 100
    # Without a criterion it is unused: every network measures ``sweeps``.
    config = SamplerConfig(**{**BLOCK, "chains": 2, "sweeps": 10}, max_sweeps=1000)
    assert int(simulate(relay(60.0), config).sweeps) == 10


@pytest.mark.parametrize(
    ("stop_when", "match"),
    [
        (lambda a, e, c: torch.ones(3, dtype=torch.bool), r"bool tensor of shape \(2,\), got .*3"),
        (lambda a, e, c: torch.ones(2), r"bool tensor of shape \(2,\), got torch.float32"),
        (lambda a, e, c: True, r"bool tensor of shape \(2,\), got True"),
        ("yes", "stop_when must be callable or None, got 'yes'"),
    ],
)
def test_bad_stop_when_is_refused(stop_when, match):
    config = SamplerConfig(
        **{**BLOCK, "chains": 2, "sweeps": 5, "thermalization": 0}, max_sweeps=10
    )
    with pytest.raises(ValueError, match=match):
        run_sampler(relay(torch.tensor([0.0, 60.0])).compile(config), config, stop_when=stop_when)


def test_a_target_error_needs_enough_chains_for_its_estimate_to_be_trusted():
    with pytest.raises(ValueError, match=r"target_stderr needs chains >= 16, got chains=8"):
        SamplerConfig(**{**BLOCK, "chains": 8}, target_stderr=0.01, max_sweeps=1000)
    SamplerConfig(**{**BLOCK, "chains": 8}, max_sweeps=1000)  # a cap alone needs no more
