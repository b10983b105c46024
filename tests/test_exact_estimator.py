"""The exact estimator: the tabulated transfer-matrix activity, against the reference and MC."""

from __future__ import annotations

import io

import pytest
import torch

from qnn_torch import Network, QuantumNeuronLayer, SamplerConfig, simulate
from qnn_torch.functional.activity_table import activity_table, driven_activity, table_range
from qnn_torch.functional.layer import decided
from qnn_torch.functional.physics import kink_path, spike_profile
from tests.helpers import PAPER, SMALL, assert_within, exact_activity

SIGMAS = 4.0
TABLE = activity_table(**SMALL, max_drive=100.0)
# Drives of a neuron that goes from rest to firing on the small lattice.
DRIVES = torch.tensor([0.0, 1.3, 7.0, 19.5, 33.0, 61.0, 140.0, 700.0], dtype=torch.float64)


def test_table_matches_the_transfer_matrix_reference_to_1e_4() -> None:
    assert TABLE.error_bound <= 1e-4
    assert TABLE.max_drive == table_range(100.0, SMALL["lam"]) >= 100.0
    torch.testing.assert_close(TABLE(DRIVES), exact_activity(SMALL, DRIVES), rtol=0, atol=1e-4)


def test_table_derivative_matches_a_central_difference_of_the_reference() -> None:
    drive = DRIVES[1:6].clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(TABLE(drive).sum(), drive)
    step = 0.01 * drive.detach()
    exact = (
        exact_activity(SMALL, drive.detach() + step) - exact_activity(SMALL, drive.detach() - step)
    ) / (2 * step)
    torch.testing.assert_close(slope, exact, rtol=2e-3, atol=1e-6)


def test_table_refuses_drives_outside_its_range() -> None:
    with pytest.raises(ValueError, match="drive must lie in"):
        TABLE(torch.tensor([TABLE.max_drive * 1.01], dtype=torch.float64))
    with pytest.raises(ValueError, match="drive must lie in"):
        TABLE(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="max_drive must be <="):
        table_range(1e30, SMALL["lam"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_layer_agrees_with_the_monte_carlo_layer(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    config = SamplerConfig(**SMALL, chains=8, thermalization=100, sweeps=400, dtype=dtype)
    exact = QuantumNeuronLayer(5, 4, coupling_scale=15.0, readout="activity", estimator="exact")
    exact.config = config
    monte_carlo = QuantumNeuronLayer(5, 4, readout="activity", config=config)
    monte_carlo.load_state_dict(exact.state_dict())  # the state holds the estimator too
    assert monte_carlo.estimator == "exact"
    monte_carlo.estimator = "monte_carlo"
    x = torch.rand(3, 5, dtype=dtype)
    expected = exact(x)
    assert expected.dtype == dtype
    torch.testing.assert_close(
        expected.double(),
        exact_activity(SMALL, exact.drives(x).detach().flatten()).view(3, 4),
        rtol=0,
        atol=1e-4 if dtype == torch.float64 else 1e-4 + 1e-6,
    )
    # Independent seeds give independent estimates: their spread is an honest error. Its
    # own scatter follows Student's t with runs − 1 degrees of freedom: 12 runs keep
    # P(|t| > 4) near 0.2% per entry (6 runs: 1%).
    runs = torch.stack([monte_carlo(x, seed=seed).double() for seed in range(12)])
    mean, stderr = runs.mean(0), runs.std(0) / 12**0.5
    z = (mean - expected.double()) / stderr
    assert z.abs().max() < SIGMAS, f"z-scores {z}"


def test_exact_layer_is_differentiable_in_weight_and_input() -> None:
    torch.manual_seed(2)
    layer = QuantumNeuronLayer(
        4,
        2,
        coupling_scale=10.0,
        readout="activity",
        estimator="exact",
        config=SamplerConfig(**SMALL),
    )
    x = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    layer.double()
    layer(x).sum().backward()
    drive = layer.drives(x).detach()
    step = 1e-3 * drive
    slope = (TABLE(drive + step) - TABLE(drive - step)) / (2 * step)  # dA/dα
    expected_weight = layer.coupling_scale.double() * slope.T @ x.detach()
    torch.testing.assert_close(layer.weight.grad, expected_weight, rtol=1e-4, atol=1e-9)
    expected_input = layer.coupling_scale.double() * slope @ layer.weight.detach()
    torch.testing.assert_close(x.grad, expected_input, rtol=1e-4, atol=1e-9)


def test_exact_estimator_needs_independent_outputs() -> None:
    with pytest.raises(ValueError, match="needs independent outputs"):
        QuantumNeuronLayer(3, 2, lateral_inhibition=10.0, estimator="exact")
    layer = QuantumNeuronLayer(3, 2, estimator="exact", config=SamplerConfig(**SMALL))
    with torch.no_grad():
        layer.lateral_inhibition.fill_(10.0)
    with pytest.raises(ValueError, match="needs independent outputs"):
        layer(torch.rand(1, 3))
    with pytest.raises(ValueError, match="estimator must be one of"):
        QuantumNeuronLayer(3, 2, estimator="transfer")


def test_config_is_saved_and_derived_buffers_follow_it() -> None:
    layer = QuantumNeuronLayer(3, 2, config=SamplerConfig(**SMALL))
    path = kink_path(**SMALL, dtype=torch.float64)
    torch.testing.assert_close(layer.spike_profile, spike_profile(path))
    target = QuantumNeuronLayer(3, 2)  # the paper's lattice
    target.load_state_dict(layer.state_dict())
    assert target.config == layer.config
    assert target.spike_profile.shape == (SMALL["n_time"],)
    assert target.activity_norm == layer.activity_norm
    loaded = QuantumNeuronLayer(3, 2)
    loaded.load_state_dict(torch.load(_saved(layer.state_dict()), weights_only=True))
    assert loaded.config == layer.config
    with pytest.raises(ValueError, match="config must be a SamplerConfig"):
        layer.config = {}
    with pytest.raises(ValueError, match="config must be a SamplerConfig"):
        QuantumNeuronLayer(3, 2, config={})


def test_readout_estimator_and_decision_sigmas_are_saved_with_the_state() -> None:
    config = SamplerConfig(**SMALL, sweeps=10, max_sweeps=100)
    layer = QuantumNeuronLayer(
        3, 2, readout="activity", estimator="exact", decision_sigmas=2.0, config=config
    )
    fresh = QuantumNeuronLayer(3, 2)  # softmax, monte_carlo, no decision mode
    assert (fresh.readout, fresh.estimator, fresh.decision_sigmas) == ("softmax", "monte_carlo", 0)
    fresh.load_state_dict(torch.load(_saved(layer.state_dict()), weights_only=True))
    assert fresh.readout == "activity"
    assert fresh.estimator == "exact"
    assert fresh.decision_sigmas == 2.0
    assert fresh.config == config
    x = torch.rand(4, 3)
    torch.testing.assert_close(fresh(x), layer(x), rtol=0, atol=0)


def _saved(state: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("coupling_scale", float("nan"), "coupling_scale must be a finite number"),
        ("lateral_inhibition", float("inf"), "lateral_inhibition must be a finite number"),
        ("coupling_scale", -1.0, "coupling_scale must be a finite number"),
    ],
)
def test_buffers_are_checked_where_forward_uses_them(name: str, value: float, match: str) -> None:
    layer = QuantumNeuronLayer(3, 2, config=SamplerConfig(**SMALL, chains=2, sweeps=2))
    state = layer.state_dict()
    state[name] = torch.tensor(value)
    layer.load_state_dict(state)
    with pytest.raises(ValueError, match=match):
        layer(torch.rand(1, 3))


def test_a_coupling_scale_that_overflows_float32_is_refused() -> None:
    with pytest.raises(ValueError, match="coupling_scale must be a finite number"):
        QuantumNeuronLayer(3, 2, coupling_scale=1e39)
    layer = QuantumNeuronLayer(3, 2, coupling_scale=3e38, config=SamplerConfig(**SMALL))
    with torch.no_grad():
        layer.weight.fill_(1.0)
    with pytest.raises(ValueError, match="overflows the drives"):
        layer(torch.ones(1, 3))


def test_decided_compares_the_top_two_outputs_chain_by_chain() -> None:
    top = torch.tensor([1.0, 1.1, 0.9, 1.0])
    correlated = torch.stack([top, top - 0.1, torch.full((4,), 0.2)], -1)  # margins all 0.1
    noisy = torch.stack([top, torch.tensor([0.7, 1.2, 0.7, 1.0]), torch.zeros(4)], -1)
    tied = torch.stack([top, top, top - 0.5], -1)
    close_third = torch.stack([top, top, top + torch.tensor([-0.05, 0.03, -0.03, 0.01])], -1)
    everything_tied = torch.stack([top, top, top], -1)
    chains = torch.stack([correlated, noisy, correlated, tied, close_third, everything_tied])
    stderr = torch.full((6, 3), 0.05)
    stderr[2, 0] = float("inf")  # stuck chains never decide
    # Row 0: the margin is 0.1 in every chain, error 0; alone, the errors of the two
    # outputs (0.05 each) would not decide. Row 1: margins 0.3, −0.1, 0.2, 0 give
    # 0.1 < 3·0.09. Row 3: outputs 0 and 1 are identical, a tie that no sweep can break,
    # and output 2 is far behind. Row 4: the same tie, but output 2 is within the noise of
    # it (margins 0.05, −0.03, 0.03, −0.01). Row 5: every output is tied.
    assert decided(chains, stderr, 3.0).tolist() == [True, False, False, True, False, True]
    # Row 1 leads by 0.1/0.0913 = 1.10 errors from 4 chains: a Student-t margin with 3
    # degrees of freedom, which decides at the tail of 0.9 Gaussian errors (t = 1.06) but not
    # at that of 1 (t = 1.20, where a Gaussian rule would have decided).
    assert decided(chains[1:2], stderr[1:2], 0.9).tolist() == [True]
    assert decided(chains[1:2], stderr[1:2], 1.0).tolist() == [False]


def test_decision_mode_stops_clear_inputs_early_and_follows_the_exact_argmax() -> None:
    config = SamplerConfig(**SMALL, chains=8, thermalization=100, sweeps=20, max_sweeps=400)
    layer = QuantumNeuronLayer(3, 3, coupling_scale=20.0, decision_sigmas=3.0, config=config)
    with torch.no_grad():  # outputs 0 and 1 are identical: no margin ever decides between them
        layer.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    x = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.9], [1.0, 0.0, 0.0]])
    with torch.no_grad():  # decision mode is for evaluation
        scores = layer(x)
    # Under common random numbers outputs 0 and 1 have identical chains: a tie that no
    # sweep breaks (their activities are equal, as the exact ones are), so the row is
    # decided against output 2 and stops early like the clear inputs.
    assert layer.last_sweeps.tolist()[2] < 400 and scores[2, 0] == scores[2, 1]
    assert all(20 <= sweeps < 400 for sweeps in layer.last_sweeps.tolist()[:2])
    assert scores[:2].argmax(-1).tolist() == [2, 2]
    layer.weight.data[1, 0] = 0.995  # a near tie: runs to the cap
    with torch.no_grad():
        layer(x)
    assert layer.last_sweeps.tolist()[2] == 400
    # Without decision mode every input measures `sweeps`.
    layer.decision_sigmas = 0.0
    layer(x)
    assert layer.last_sweeps.tolist() == [20, 20, 20]
    layer.estimator = "exact"
    layer(x)
    assert layer.last_sweeps is None


def test_decision_mode_needs_a_cap_above_the_block() -> None:
    with pytest.raises(ValueError, match="decision_sigmas=3 needs"):
        QuantumNeuronLayer(3, 2, decision_sigmas=3.0, config=SamplerConfig(**SMALL))
    with pytest.raises(ValueError, match="decision_sigmas must be a finite number >= 0"):
        QuantumNeuronLayer(3, 2, decision_sigmas=-1.0)
    layer = QuantumNeuronLayer(3, 2, config=SamplerConfig(**SMALL))
    layer.decision_sigmas = 2.0
    with pytest.raises(ValueError, match=r"needs at least 2 outputs and config\.max_sweeps"):
        layer(torch.rand(1, 3))
    layer.config = SamplerConfig(**SMALL, sweeps=10, max_sweeps=100)
    with pytest.raises(ValueError, match="would bias the gradients"):
        layer(torch.rand(1, 3, requires_grad=True))


def test_spikes_start_equilibrates_the_paper_lattice_quickly() -> None:
    """From the input's spiking path, 100 sweeps suffice at MNIST drives (the vacuum
    start is still 0.1–0.5 low there); every activity is within 4σ of the exact one."""
    strengths = torch.tensor([0.0, 3000.0, 6000.0, 12000.0])
    net = Network().add_input("x").add_neuron("y").excite("x", "y", strengths)
    config = SamplerConfig(**PAPER, chains=16, thermalization=100, sweeps=100, init="spikes")
    result = simulate(net, config)
    assert_within(result.activity["y"], result.stderr["y"], driven_activity(strengths, **PAPER))
