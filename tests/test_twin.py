"""The twin of a quantum MLP: its tables against the transfer matrix, the twin against the
time-resolved mean field it reduces and against the Monte Carlo, its gradients, and its
errors."""

from __future__ import annotations

import pytest
import torch

from qnn_torch import QuantumMLP, SamplerConfig
from qnn_torch.functional.exact import driven_pair_reference, neuron_moments
from qnn_torch.functional.mean_field import mean_field_activities
from qnn_torch.functional.physics import input_spike
from qnn_torch.functional.twin import (
    DEEPENING_TERMS,
    EMISSION_TERMS,
    hidden_response,
    interpolate,
    output_response,
    twin_activities,
    twin_tables,
)
from tests.helpers import SMALL

LATTICE = (SMALL["n_time"], SMALL["time_extent"], SMALL["lam"], SMALL["n_kinks"])
SMALL_GRID = (9, 3, 5, 3, 17, 9, 5)
TOLERANCE = 0.04  # relative, of the twin on SMALL_GRID against the mean field


@pytest.fixture(scope="module")
def tables():
    return twin_tables(*LATTICE, SMALL_GRID)


def test_interpolation_is_exact_for_multilinear_functions() -> None:
    axes = [torch.linspace(0, 1, n, dtype=torch.float64) for n in (4, 3, 5)]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    f = lambda x, y, z: 1 + 2 * x - y + 0.5 * z + 3 * x * y - x * y * z  # noqa: E731
    table = torch.stack([f(x, y, z), -f(x, y, z)], -1)
    points = torch.rand(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    value = interpolate(table, points)
    expected = f(*points.unbind(-1))
    torch.testing.assert_close(value, torch.stack([expected, -expected], -1))


def test_tables_equal_the_transfer_matrix_at_their_nodes(tables) -> None:
    """Node values are exact single-neuron activities of the fields the module doc gives."""
    n_time, time_extent, lam, n_kinks = LATTICE
    g, norm = input_spike(n_time, time_extent, lam, n_kinks)
    assert tables.hidden.shape == (*SMALL_GRID[:4], 1 + EMISSION_TERMS)
    assert tables.output.shape == (*SMALL_GRID[4:], 1 + DEEPENING_TERMS)
    # Hidden: drive at node 4 of 9, inhibition at node 1 of 3, deepening at node 2 of 5,
    # ratio at node 1 of 3; read back at those fractions.
    from qnn_torch.functional import twin

    alpha = twin._magnitude_nodes("drive", lam, 9)[4]
    beta = twin._magnitude_nodes("inhibition", lam, 3)[1]
    kappa = twin._magnitude_nodes("deepening", lam, 5)[2]
    rho = tables.ratio_bounds[0].mean()
    deepening = torch.stack([kappa, kappa * rho])
    v0, _, _ = neuron_moments(
        alpha * g,
        beta * g**2,
        (deepening @ tables.deepening_basis).clamp_min(0.0),
        time_extent=time_extent,
        lam=lam,
    )
    read = hidden_response(tables, alpha, beta, deepening)
    torch.testing.assert_close(read[0], v0.sum() / norm, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(read, tables.hidden[4, 1, 2, 1])

    d = twin._magnitude_nodes("output_drive", lam, 9)[6]
    ratios = tables.ratio_bounds[1:].mean(-1)
    coefficients = torch.cat([d[None], d * ratios])
    v0, x, _ = neuron_moments(
        (coefficients @ tables.emission_basis).clamp_min(0.0),
        None,
        None,
        time_extent=time_extent,
        lam=lam,
    )
    read = output_response(tables, coefficients)
    torch.testing.assert_close(read[0], v0.sum() / norm, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(read[1:], x @ tables.deepening_basis.t(), rtol=1e-9, atol=1e-9)


def test_tables_between_nodes_are_within_their_measured_error(tables) -> None:
    assert 0 < tables.error_bound < 0.5
    n_time, time_extent, lam, n_kinks = LATTICE
    g, norm = input_spike(n_time, time_extent, lam, n_kinks)
    alpha = torch.tensor([0.3, 1.7, 4.2], dtype=torch.float64) * lam
    v0, _, _ = neuron_moments(alpha[:, None] * g, None, None, time_extent=time_extent, lam=lam)
    zero = torch.zeros(3, dtype=torch.float64)
    read = hidden_response(tables, alpha, zero, torch.zeros(3, 2, dtype=torch.float64))[:, 0]
    assert (read - v0.sum(-1) / norm).abs().max() <= tables.error_bound


def weak_net(hidden: int = 6, outputs: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    b = torch.rand(4, 20, generator=generator, dtype=torch.float64)
    excite = [
        torch.rand(hidden, 20, generator=generator, dtype=torch.float64) * 0.3,
        torch.rand(outputs, hidden, generator=generator, dtype=torch.float64) * 0.15,
    ]
    inhibit = [
        torch.rand(hidden, 20, generator=generator, dtype=torch.float64) * 0.3,
        torch.zeros(outputs, hidden, dtype=torch.float64),
    ]
    return b, excite, inhibit


def test_twin_follows_the_time_resolved_mean_field(tables) -> None:
    """The twin reduces the mean field (profiles to 3 and 2 terms, responses to tables);
    on a net whose links move the hidden activities by ~20 % it stays within 4 % on this
    small test grid (measured: 2.9 %; the default grid's errors are in docs)."""
    n_time, time_extent, lam, n_kinks = LATTICE
    b, excite, inhibit = weak_net()
    k = lam
    reference = mean_field_activities(
        b, excite, inhibit, k, k, n_time=n_time, time_extent=time_extent, lam=lam, n_kinks=n_kinks
    ).activities
    hidden, output, change = twin_activities(
        tables, k * b @ excite[0].t(), k * (b * b) @ inhibit[0].t(), k * excite[1], 8
    )
    alone = mean_field_activities(
        b,
        excite[:1],
        inhibit[:1],
        k,
        k,
        n_time=n_time,
        time_extent=time_extent,
        lam=lam,
        n_kinks=n_kinks,
    ).activities[0]
    assert ((alone - reference[0]) / reference[0]).abs().median() > 0.1  # back-reaction
    assert change < 1e-3
    assert ((hidden - reference[0]) / reference[0]).abs().max() < TOLERANCE
    assert ((output - reference[1]) / reference[1]).abs().max() < TOLERANCE


def twin_mlp(**kwargs) -> QuantumMLP:
    _, excite, inhibit = weak_net()
    mlp = QuantumMLP(
        (20, 6, 3),
        config=SamplerConfig(**SMALL, chains=16, thermalization=200, sweeps=400),
        coupling_scale=SMALL["lam"],
        inhibition_scale=SMALL["lam"],
        readout="activity",
        estimator="twin",
        twin_grid=SMALL_GRID,
        **kwargs,
    )
    with torch.no_grad():
        for weights, values in ((mlp.excite, excite), (mlp.inhibit, inhibit)):
            for weight, value in zip(weights, values, strict=True):
                weight.copy_(value)
    return mlp


def test_twin_against_the_monte_carlo() -> None:
    """Same couplings, both estimators: the twin within its tolerance plus 4 standard
    errors of the Monte Carlo, for every neuron."""
    mlp = twin_mlp()
    b = weak_net()[0].float()
    with torch.no_grad():
        twin = mlp.activities(b)
        mlp.estimator = "monte_carlo"
        sampled = mlp.activities(b)
    for tw, mc, error in zip(twin, sampled, mlp.last_stderr, strict=True):
        assert ((tw - mc).abs() <= TOLERANCE * mc.abs() + 4 * error).all(), (tw, mc, error)


def test_twin_gradients_are_its_derivatives() -> None:
    mlp = twin_mlp().double()
    b = weak_net()[0][:2]
    for weight in (*mlp.excite, mlp.inhibit[0]):

        def loss(w, weight=weight):
            with torch.no_grad():
                weight.copy_(w)
            return mlp.activities(b)[-1].sum()

        value = weight.detach().clone()
        mlp.zero_grad()
        mlp.activities(b)[-1].sum().backward()
        analytic = weight.grad.clone()
        index = tuple(int(i) for i in (analytic.abs() == analytic.abs().max()).nonzero()[0])
        step = 1e-4
        up, down = value.clone(), value.clone()
        up[index] += step
        down[index] -= step
        with torch.no_grad():
            numeric = (loss(up) - loss(down)) / (2 * step)
            weight.copy_(value)
        assert analytic[index] != 0
        torch.testing.assert_close(analytic[index], numeric, rtol=1e-3, atol=1e-6)


def test_twin_shapes_and_dtypes() -> None:
    mlp = twin_mlp()
    x = torch.rand(2, 3, 20)
    hidden, output = mlp.activities(x)
    assert hidden.shape == (2, 3, 6) and output.shape == (2, 3, 3)
    assert output.dtype == torch.float32
    assert mlp.double().activities(x.double())[1].dtype == torch.float64
    assert mlp(x.double()).shape == (2, 3, 3)


def test_twin_refuses_what_it_cannot_model() -> None:
    with pytest.raises(ValueError, match="exactly one hidden layer"):
        QuantumMLP((4, 3), estimator="twin").activities(torch.rand(1, 4))
    mlp = twin_mlp()
    with torch.no_grad():
        mlp.inhibit[1].fill_(0.1)
    with pytest.raises(ValueError, match="inhibit\\[1\\] must be 0"):
        mlp.activities(torch.rand(1, 20))
    mlp = twin_mlp()
    with torch.no_grad():
        mlp.excite[0].fill_(100.0)
    with pytest.raises(ValueError, match="twin's drive must lie in"):
        mlp.activities(torch.ones(1, 20))
    for grid in ((3, 3), (9, 3, 5, 3, 9, 3, 1), "abc", (9, 3, 5, 3, 9, 3, 2.5)):
        with pytest.raises(ValueError, match="twin_grid"):
            QuantumMLP((4, 3, 2), twin_grid=grid)


def test_twin_grid_survives_the_state_dict() -> None:
    mlp = twin_mlp()
    copy = QuantumMLP((20, 6, 3))
    copy.load_state_dict(mlp.state_dict())
    assert copy.twin_grid == SMALL_GRID and copy.estimator == "twin"


@pytest.mark.parametrize(("alpha", "epsilon"), [(1.5, 0.5), (0.0, 1.0)], ids=["driven", "undriven"])
def test_the_mlp_lattice_samples_a_driven_chain_exactly(alpha: float, epsilon: float) -> None:
    """On the lattice the MNIST job trains and tests on (Λ = 200, T = 1, Nt = 32), a chain
    x → h → o (drive α·Λ on h, link ε·Λ to o) against the exact pair transfer matrix
    (M = 40 is within 1e-7 of M = 56 here), within 4 standard errors."""
    from training.quantum_mlp import MLP_CONFIG

    c = MLP_CONFIG
    g, norm = input_spike(c.n_time, c.time_extent, c.lam, c.n_kinks)
    drive = torch.stack([alpha * c.lam * g, 0.0 * g])
    exact = (
        driven_pair_reference(
            drive,
            inhibit=0.0,
            excite_01=epsilon * c.lam,
            time_extent=c.time_extent,
            lam=c.lam,
            grid_points=40,
            phi_max=2.2,
        )
        / norm
    )
    config = SamplerConfig(
        n_time=c.n_time,
        time_extent=c.time_extent,
        lam=c.lam,
        n_kinks=c.n_kinks,
        chains=16,
        thermalization=200,
        sweeps=1000,
        seed=3,
    )
    mlp = QuantumMLP(
        (1, 1, 1), config=config, coupling_scale=c.lam, readout="activity", inhibition=False
    )
    with torch.no_grad():
        mlp.excite[0].fill_(alpha)
        mlp.excite[1].fill_(epsilon)
        activity = torch.cat(mlp.activities(torch.ones(1, 1, dtype=torch.float64)), -1)[0]
    error = torch.cat(mlp.last_stderr, -1)[0]
    assert torch.isfinite(error).all()
    assert ((activity - exact).abs() <= 4 * error).all(), (activity, exact, error)


def test_bound_to_twin_keeps_every_input_inside_the_tables() -> None:
    mlp = twin_mlp()
    inside = [w.detach().clone() for w in mlp.parameters()]
    mlp.bound_to_twin_()
    for before, after in zip(inside, mlp.parameters(), strict=True):
        assert torch.equal(before, after)  # couplings already inside are left alone
    with torch.no_grad():
        mlp.excite[0].mul_(1e3)
        mlp.inhibit[0].mul_(1e3)
        mlp.excite[1].mul_(1e3)
    with pytest.raises(ValueError, match="lower the couplings"):
        mlp.activities(torch.ones(1, 20))
    mlp.bound_to_twin_()
    hidden, output = mlp.activities(torch.cat([torch.ones(1, 20), torch.rand(3, 20)]))
    assert torch.isfinite(hidden).all()
    assert torch.isfinite(output).all()
