"""Rao–Blackwell measurement: exact conditional expectations in the sampler."""

from __future__ import annotations

import pytest
import torch

from qnn_torch import QuantumMLP, SamplerConfig, StuckChainWarning
from qnn_torch.functional.conditional import conditional_well_sum
from qnn_torch.functional.exact import neuron_moments
from qnn_torch.network import Network
from qnn_torch.simulate import run_sampler
from tests.helpers import SMALL, assert_within, exact_activity
from tests.test_mlp import chain, exact_chain

LAM, SPACING = 200.0, 1.0 / 32


def random_fields(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drive, extra deepening and inhibition (3, 4, 32) ≥ 0, as sampled paths make them."""
    generator = torch.Generator().manual_seed(0)
    drive, deepening, inhibition = (
        torch.rand(3, 3, 4, 32, generator=generator, dtype=torch.float64)
        * torch.tensor([600.0, 40.0, 100.0], dtype=torch.float64)[:, None, None, None]
    )
    return drive.to(dtype), deepening.to(dtype), inhibition.to(dtype)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-7), (torch.float32, 2e-6)])
def test_conditional_sums_are_the_transfer_matrix(dtype: torch.dtype, tolerance: float) -> None:
    drive, deepening, inhibition = random_fields(dtype)
    exact = neuron_moments(
        drive.double(), inhibition.double(), deepening.double(), time_extent=1.0, lam=LAM
    )[0].sum(-1)
    measured = conditional_well_sum(
        drive, deepening=deepening + LAM / 4, inhibition=inhibition, spacing=SPACING, lam=LAM
    )
    assert measured.dtype == dtype and measured.shape == (3, 4)
    assert ((measured.double() - exact) / exact).abs().max() < tolerance
    # Without extra deepening (K = Λ/4, a float) nor inhibition.
    plain = neuron_moments(drive.double(), None, None, time_extent=1.0, lam=LAM)[0].sum(-1)
    measured = conditional_well_sum(
        drive, deepening=LAM / 4, inhibition=None, spacing=SPACING, lam=LAM
    )
    assert ((measured.double() - plain) / plain).abs().max() < tolerance


@pytest.mark.parametrize(
    ("alpha", "epsilon", "eta"),
    [(40.0, 30.0, 0.0), (0.0, 60.0, 0.0), (60.0, 20.0, 20.0)],
    ids=["driven", "undriven", "inhibited"],
)
def test_conditional_chain_matches_the_exact_pair(alpha, epsilon, eta) -> None:
    """x → h → o with the output measured conditionally, against the exact pair, and with
    an error at least 2× smaller than the plain measurement's from the same paths."""
    x = torch.ones(1, 1, dtype=torch.float64)
    errors = {}
    for every in (0, 10):
        mlp = chain(alpha, epsilon, eta, dtype=torch.float64)
        mlp.conditional_every = every
        with torch.no_grad():
            hidden, output = mlp.activities(x)
        errors[every] = mlp.last_stderr[1][0, 0]
    measured = torch.cat([hidden, output], -1)[0]
    assert_within(measured, torch.cat(mlp.last_stderr, -1)[0], exact_chain(alpha, epsilon, eta))
    assert errors[10] < errors[0] / 2, errors


def test_conditional_measurement_of_independent_neurons_is_exact() -> None:
    """Unlinked neurons given nothing: every conditional value is the exact activity, so
    the chains agree to rounding whatever their paths (which the stuck-chain check, seeing
    chains that all agree, flags)."""
    network = Network().add_input("x", 1.0)
    for name, drive in (("a", 0.0), ("b", 40.0)):
        network.add_neuron(name).excite("x", name, drive)
    config = SamplerConfig(**SMALL, chains=4, thermalization=10, sweeps=20, dtype=torch.float64)
    compiled = network.compile(config)
    with pytest.warns(StuckChainWarning, match="chains that all agree"):
        out = run_sampler(compiled, config, conditional_color=0, conditional_every=5)
    exact = exact_activity(SMALL, torch.tensor([0.0, 40.0], dtype=torch.float64))
    assert ((out.chain_activity[0] - exact) / exact).abs().max() < 1e-4  # the coarser grid


def test_conditional_measurement_refuses_what_it_cannot_do() -> None:
    config = SamplerConfig(**SMALL, chains=2, thermalization=0, sweeps=20, init="equilibrium")
    network = Network().add_input("x", 1.0).add_neuron("a").excite("x", "a", 10.0)
    compiled = network.compile(config)
    cases = [
        ({"conditional_color": 3}, "conditional_color"),
        ({"conditional_color": True}, "conditional_color"),
        ({"conditional_color": 0, "conditional_every": 0}, "conditional_every"),
        ({"conditional_color": 0, "conditional_every": 3}, "conditional_every=3"),
        ({"conditional_color": 0, "gradients": ("drive",)}, "gradients"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            run_sampler(compiled, config, **kwargs)
    mlp = chain(40.0, 30.0, sweeps=20)
    with pytest.raises(ValueError, match="conditional_every"):
        mlp.conditional_every = -1
    mlp.conditional_every = 10
    with pytest.raises(ValueError, match="conditional_every=10 is for evaluation"):
        mlp.activities(torch.ones(1, 1))  # parameters want gradients
    copy = QuantumMLP((1, 1, 1))
    copy.load_state_dict(mlp.state_dict())
    assert copy.conditional_every == 10


def test_conditional_networks_that_stop_apart_keep_their_values() -> None:
    """A batch of four inputs to a 3 → 2 → 3 net with input and hidden–output inhibition,
    in blocks until each error is small (networks stop at different blocks and leave the
    rows; chunks of 5 rows cut across networks), agrees with the plain measurement of a
    long run within 4σ."""
    settings = {**SMALL, "chains": 16, "thermalization": 100, "dtype": torch.float64}
    mlp = QuantumMLP((3, 2, 3), readout="activity", coupling_scale=20.0, inhibition_scale=20.0)
    with torch.no_grad():
        mlp.excite[0].copy_(torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0]]))
        mlp.excite[1].copy_(torch.tensor([[1.5, 0.0], [0.5, 1.0], [0.0, 2.0]]))
        mlp.inhibit[0].copy_(torch.tensor([[0.0, 1.0, 0.5], [0.5, 0.0, 0.0]]))
        mlp.inhibit[1][0, 1] = 1.0
    x = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.2]], dtype=torch.float64
    )
    mlp.config = SamplerConfig(**settings, sweeps=1000, seed=1)
    with torch.no_grad():
        plain, plain_error = mlp.activities(x)[-1], mlp.last_stderr[-1]
    mlp.config = SamplerConfig(
        **settings, sweeps=20, max_sweeps=400, target_stderr=0.01, chunk_rows=5, seed=2
    )
    mlp.conditional_every = 10
    with torch.no_grad():
        measured, error = mlp.activities(x)[-1], mlp.last_stderr[-1]
    assert len(set(mlp.last_sweeps.tolist())) > 1, mlp.last_sweeps
    z = (measured - plain) / (error**2 + plain_error**2).sqrt()
    assert z.abs().max() < 4, z
    config = SamplerConfig(**SMALL, chains=16, sweeps=20, max_sweeps=50, target_stderr=0.01)
    network = Network().add_input("x", 1.0).add_neuron("a").excite("x", "a", 10.0)
    with pytest.raises(ValueError, match=r"must divide config\.max_sweeps=50"):
        run_sampler(network.compile(config), config, conditional_color=0, conditional_every=20)
    with pytest.raises(ValueError, match="needs a hidden layer"):
        QuantumMLP((3, 2), conditional_every=10)
