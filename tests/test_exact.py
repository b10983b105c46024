"""The exact transfer-matrix oracles: closed forms, grid convergence, physics, symmetries."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from qnn_torch.functional import exact
from qnn_torch.functional.exact import (
    _grid,
    _lattice_correlation,
    _transfer_profile,
    driven_pair_reference,
    neuron_moments,
    single_neuron_activity,
    single_neuron_profile,
    single_neuron_reference,
    three_neuron_reference,
    two_neuron_reference,
)
from qnn_torch.functional.physics import double_well, kink_path, spike_profile

F64 = torch.float64
PAPER = {"n_time": 512, "time_extent": 0.7, "lam": 5000.0}
SMALL = {"n_time": 32, "time_extent": 2.0, "lam": 20.0}
TWO = {"n_time": 16, "time_extent": 2.0, "lam": 20.0}


def kink_drive(epsilon: float, *, n_time: int, time_extent: float, lam: float) -> torch.Tensor:
    """h_t = ε·g_t: the field of an input path with 4 kinks on the lattice."""
    return epsilon * spike_profile(kink_path(n_time, time_extent, lam, 4, dtype=F64))


def auto_grid(drive: torch.Tensor, inhibition: float, lattice: dict) -> tuple[int, float]:
    """(M, φ_max) of the automatic grid for these fields."""
    spacing = lattice["time_extent"] / lattice["n_time"]
    extra = (0.0, drive.max().item(), inhibition)
    phi = _grid(lattice["n_time"], spacing, lattice["lam"], extra, 0, 0.0)
    return phi.numel(), phi[-1].item()


def zero_point_width(lattice: dict) -> float:
    spacing = lattice["time_extent"] / lattice["n_time"]
    omega_sq = torch.tensor(2.0 * lattice["lam"], dtype=F64)
    return _lattice_correlation(lattice["n_time"], spacing, omega_sq)[0].sqrt().item()


def relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    return ((new - old).abs() / old.abs()).max().item()


@pytest.fixture(scope="module")
def paper_results() -> dict[float, float]:
    """⟨Σ_t V0⟩ / Σ_t V0(ψ_t) at the paper's lattice for drive strengths ε = 0 and 6000."""
    path = kink_path(**PAPER, n_kinks=4, dtype=F64)
    drives = torch.tensor([0.0, 6000.0], dtype=F64)
    activity = single_neuron_activity(
        drives, None, path, time_extent=PAPER["time_extent"], lam=PAPER["lam"]
    )
    return dict(zip(drives.tolist(), activity.tolist(), strict=True))


@pytest.mark.parametrize(("n_time", "time_extent", "omega"), [(16, 2.0, 3.0), (64, 4.0, 5.0)])
def test_harmonic_oscillator_closed_form(n_time: int, time_extent: float, omega: float):
    # S = Σ (x_{t+1} − x_t)²/(2a) + a·ω²x_t²/2:  ⟨x_t²⟩ = (1/(Nt·a))·Σ_k 1/((4/a²)sin²(πk/Nt) + ω²)
    # and, with measure Π dx_t/√(2πa), Z = Π_k (4·sin²(πk/Nt) + a²ω²)^(−1/2).
    a = time_extent / n_time
    sin2 = torch.sin(torch.arange(n_time, dtype=F64) * math.pi / n_time) ** 2
    expected_x2 = (1.0 / (4.0 * sin2 / a**2 + omega**2)).sum().item() / (n_time * a)
    expected_log_z = -0.5 * torch.log(4.0 * sin2 + (a * omega) ** 2).sum().item()

    phi = torch.linspace(-12.0 / math.sqrt(omega), 12.0 / math.sqrt(omega), 161, dtype=F64)
    potential = (0.5 * omega**2 * phi * phi).expand(1, n_time, -1)
    profile, log_z = _transfer_profile(potential, phi, phi * phi, a)

    assert profile.shape == (1, n_time)
    torch.testing.assert_close(profile, torch.full_like(profile, expected_x2), rtol=1e-8, atol=0)
    assert log_z.item() == pytest.approx(expected_log_z, rel=1e-8)


def test_transfer_profile_matches_enumeration():
    # Same grid, all M^Nt paths summed explicitly, with a slice-dependent potential.
    n_time, spacing, lam = 3, 0.3, 4.0
    phi = torch.linspace(-2.0, 2.0, 16, dtype=F64)
    dphi = (phi[1] - phi[0]).item()
    potential = double_well(phi, lam) + torch.tensor([[0.0], [1.5], [4.0]], dtype=F64) * phi**2
    profile, log_z = _transfer_profile(potential[None], phi, double_well(phi, lam), spacing)

    paths = torch.tensor(list(itertools.product(range(16), repeat=n_time)))
    values = phi[paths]
    kinetic = ((values.roll(-1, dims=1) - values) ** 2).sum(dim=1) / (2 * spacing)
    local = potential[torch.arange(n_time), paths].sum(dim=1)
    weight = torch.exp(-kinetic - spacing * local)
    z = weight.sum() * (dphi / math.sqrt(2 * math.pi * spacing)) ** n_time
    expected = (weight[:, None] * double_well(values, lam)).sum(dim=0) / weight.sum()

    torch.testing.assert_close(profile[0], expected, rtol=1e-12, atol=0)
    assert log_z.item() == pytest.approx(math.log(z.item()), rel=1e-12)


@pytest.mark.parametrize("epsilon", [0.0, 6000.0])
def test_grid_convergence_paper(epsilon: float):
    drive = kink_drive(epsilon, **PAPER)
    kwargs = {"time_extent": PAPER["time_extent"], "lam": PAPER["lam"]}
    points, phi_max = auto_grid(drive, 0.0, PAPER)
    automatic = single_neuron_reference(drive, None, **kwargs)
    refined = single_neuron_reference(
        drive,
        None,
        **kwargs,
        grid_points=2 * points,
        phi_max=phi_max + 2 * zero_point_width(PAPER),
    )
    change = relative_change(refined, automatic)
    print(f"paper ε={epsilon}: M={points}, φ_max={phi_max:.3f}, doubled grid changes {change:.1e}")
    assert change < 1e-8


@pytest.mark.parametrize(("epsilon", "inhibition"), [(0.0, 0.0), (50.0, 0.0), (0.0, 10.0)])
def test_grid_convergence_small(epsilon: float, inhibition: float):
    drive = kink_drive(epsilon, **SMALL)
    field = torch.full_like(drive, inhibition)
    kwargs = {"time_extent": SMALL["time_extent"], "lam": SMALL["lam"]}
    points, phi_max = auto_grid(drive, inhibition, SMALL)
    automatic = single_neuron_profile(drive, field, **kwargs)
    refined = single_neuron_profile(
        drive,
        field,
        **kwargs,
        grid_points=2 * points,
        phi_max=phi_max + 2 * zero_point_width(SMALL),
    )
    change = relative_change(refined, automatic)
    print(f"small ε={epsilon}, H={inhibition}: M={points}, doubled grid changes {change:.1e}")
    assert change < 1e-8


def test_zero_point_baseline_and_driven_activity(paper_results: dict[float, float]):
    print(f"⟨ΣV0⟩/ΣV0(ψ): ε=0 {paper_results[0.0]:.4f}, ε=6000 {paper_results[6000.0]:.4f}")
    assert 0.10 < paper_results[0.0] < 0.16
    assert paper_results[6000.0] > 0.5


def test_profile_follows_time_reversal():
    drive = torch.rand(SMALL["n_time"], dtype=F64, generator=torch.Generator().manual_seed(0))
    kwargs = {"time_extent": SMALL["time_extent"], "lam": SMALL["lam"], "grid_points": 48}
    profile = single_neuron_profile(50.0 * drive, None, **kwargs)
    reversed_profile = single_neuron_profile(50.0 * drive.flip(-1), None, **kwargs)
    torch.testing.assert_close(reversed_profile, profile.flip(-1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("grid_points", [0, 40])
def test_batched_equals_unbatched(grid_points: int, monkeypatch: pytest.MonkeyPatch):
    generator = torch.Generator().manual_seed(1)
    drive = 30.0 * torch.rand(2, 3, SMALL["n_time"], dtype=F64, generator=generator)
    inhibition = 5.0 * torch.rand(3, SMALL["n_time"], dtype=F64, generator=generator)
    kwargs = {"time_extent": SMALL["time_extent"], "lam": SMALL["lam"]}
    if grid_points:
        kwargs |= {"grid_points": grid_points, "phi_max": 3.0}
    batched = single_neuron_reference(drive, inhibition, **kwargs)
    monkeypatch.setattr(exact, "_MAX_STORED_BYTES", 1)  # one batch element per chunk
    chunked = single_neuron_reference(drive, inhibition, **kwargs)
    single = torch.stack(
        [
            torch.stack(
                [single_neuron_reference(drive[i, j], inhibition[j], **kwargs) for j in range(3)]
            )
            for i in range(2)
        ]
    )
    assert batched.shape == (2, 3)
    # The automatic grid follows the largest field, so it differs between the calls.
    rtol = 1e-12 if grid_points else 1e-9
    torch.testing.assert_close(batched, single, rtol=rtol, atol=0)
    torch.testing.assert_close(chunked, batched, rtol=1e-12, atol=0)


def test_two_neurons_decoupled_equal_single_neuron():
    grid = {"grid_points": 36, "phi_max": 3.2}
    pair = two_neuron_reference(**SMALL, **grid)
    single = single_neuron_reference(
        torch.zeros(SMALL["n_time"], dtype=F64),
        None,
        time_extent=SMALL["time_extent"],
        lam=SMALL["lam"],
        **grid,
    ).item()
    assert pair[0] == pytest.approx(single, rel=1e-8)
    assert pair[1] == pytest.approx(single, rel=1e-8)


def test_two_neurons_swap_and_coupling_effects():
    grid = {"grid_points": 30, "phi_max": 3.2}
    free = two_neuron_reference(**TWO, **grid)
    forward = two_neuron_reference(**TWO, excite_01=10.0, excite_10=2.0, **grid)
    backward = two_neuron_reference(**TWO, excite_01=2.0, excite_10=10.0, **grid)
    assert backward[0] == pytest.approx(forward[1], rel=1e-10)
    assert backward[1] == pytest.approx(forward[0], rel=1e-10)
    # A spike of 0 pulls 1 towards 0, and spiking costs 0 the coupling energy.
    excited = two_neuron_reference(**TWO, excite_01=10.0, **grid)
    assert excited[1] > free[1] > excited[0]
    # Mutual inhibition is symmetric and suppresses both.
    inhibited = two_neuron_reference(**TWO, inhibit=10.0, **grid)
    assert inhibited[0] == pytest.approx(inhibited[1], rel=1e-10)
    assert inhibited[0] < free[0]


def test_two_neuron_grid_convergence():
    couplings = {"excite_01": 10.0, "excite_10": 3.0}
    spacing = TWO["time_extent"] / TWO["n_time"]
    phi = _grid(TWO["n_time"], spacing, TWO["lam"], (40.0, 10.0, 0.0), 0, 0.0)
    automatic = two_neuron_reference(**TWO, **couplings)
    refined = two_neuron_reference(
        **TWO,
        **couplings,
        grid_points=phi.numel() + 12,
        phi_max=phi[-1].item() + 2 * zero_point_width(TWO),
    )
    change = max(abs(r / v - 1) for r, v in zip(refined, automatic, strict=True))
    print(f"two neurons: M={phi.numel()}, M+12 and wider φ_max change {change:.1e}")
    assert change < 1e-8


DRIVE = torch.zeros(8, dtype=F64)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"time_extent": 0.0}, "time_extent"),
        ({"time_extent": -1.0}, "time_extent"),
        ({"time_extent": math.nan}, "time_extent"),
        ({"lam": 0.0}, "lam"),
        ({"lam": math.inf}, "lam"),
        ({"drive": DRIVE - 1.0}, "drive"),
        ({"drive": DRIVE + math.nan}, "drive"),
        ({"drive": torch.tensor(1.0)}, "drive"),
        ({"inhibition": DRIVE - 2.0}, "inhibition"),
        ({"inhibition": DRIVE + math.inf}, "inhibition"),
        ({"grid_points": -1}, "grid_points"),
        ({"grid_points": 5}, "grid_points"),
        ({"phi_max": -1.0}, "phi_max"),
        ({"phi_max": 0.5}, "phi_max"),
        ({"phi_max": math.inf}, "phi_max"),
    ],
)
def test_single_neuron_rejects_bad_arguments(kwargs: dict, name: str):
    arguments = {"drive": DRIVE, "inhibition": None, "time_extent": 1.0, "lam": 20.0} | kwargs
    drive, inhibition = arguments.pop("drive"), arguments.pop("inhibition")
    with pytest.raises(ValueError, match=name):
        single_neuron_reference(drive, inhibition, **arguments)


KINK = kink_path(n_time=16, time_extent=1.0, lam=20.0, n_kinks=2, dtype=F64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": torch.ones(16, dtype=F64)}, "path has"),  # no kink: Σ V0(ψ) = 0
        ({"path": KINK + math.nan}, "path must be a finite 1-D"),
        ({"path": KINK[None]}, "path must be a finite 1-D"),
        ({"drive": torch.tensor([-1.0])}, "drive must be finite and >= 0.*-1.0"),
        ({"drive": torch.tensor([math.nan])}, "drive must be finite"),
        ({"inhibition": torch.tensor([-1.0])}, "inhibition must be finite and >= 0.*-1.0"),
        ({"lam": 0.0}, "lam"),
    ],
)
def test_single_neuron_activity_rejects_bad_arguments(kwargs: dict, match: str):
    arguments = {"drive": torch.tensor([5.0]), "inhibition": None, "path": KINK}
    arguments |= {"time_extent": 1.0, "lam": 20.0} | kwargs
    with pytest.raises(ValueError, match=match):
        single_neuron_activity(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_time": 0}, "n_time"),
        ({"n_time": 8.0}, "n_time"),
        ({"n_time": True}, "n_time"),
        ({"time_extent": 0.0}, "time_extent"),
        ({"lam": -5.0}, "lam"),
        ({"excite_01": -1.0}, "excite_01"),
        ({"excite_10": math.nan}, "excite_10"),
        ({"inhibit": -0.5}, "inhibit"),
        ({"grid_points": 8}, "grid_points"),
        ({"grid_points": 101}, "grid_points"),
        ({"inhibit": 10.0, "n_time": 32, "time_extent": 2.0}, "grid_points"),
        ({"phi_max": 1.0}, "phi_max"),
    ],
)
def test_two_neurons_reject_bad_arguments(kwargs: dict, name: str):
    with pytest.raises(ValueError, match=name):
        two_neuron_reference(**({"n_time": 8, "time_extent": 1.0, "lam": 20.0} | kwargs))


# Driven pair: the test suite's small lattice (tests/helpers.py), fields ε·g_t from kink paths.
PAIR = {"n_time": 32, "time_extent": 2.0, "lam": 60.0}
PAIR_GRID = {"grid_points": 36, "phi_max": 3.0}


def pair_drive(epsilon_0: float, epsilon_1: float) -> torch.Tensor:
    """(2, Nt) fields ε_n·g_t, neuron 1's spike profile shifted by 5 slices."""
    g = spike_profile(kink_path(**PAIR, n_kinks=2, dtype=F64))
    return torch.stack([epsilon_0 * g, epsilon_1 * g.roll(5)])


def pair_kwargs(**grid) -> dict:
    return {"time_extent": PAIR["time_extent"], "lam": PAIR["lam"]} | grid


@pytest.mark.parametrize("grid_points", [35, 36])  # odd and even grids: unequal parity blocks
def test_driven_pair_uninhibited_equals_single_neurons(grid_points: int):
    drive = pair_drive(50.0, 20.0)
    kwargs = pair_kwargs(grid_points=grid_points, phi_max=3.0)
    pair = driven_pair_reference(drive, inhibit=0.0, **kwargs)
    single = single_neuron_reference(drive, None, **kwargs)
    assert pair.shape == (2,) and pair.dtype == F64
    torch.testing.assert_close(pair, single, rtol=1e-8, atol=0)


def test_driven_pair_undriven_equals_two_neuron_reference():
    drive = torch.zeros(2, PAIR["n_time"], dtype=F64)
    pair = driven_pair_reference(drive, inhibit=5.0, **pair_kwargs(**PAIR_GRID))
    expected = two_neuron_reference(**PAIR, inhibit=5.0, **PAIR_GRID)
    torch.testing.assert_close(pair, torch.tensor(expected, dtype=F64), rtol=1e-8, atol=0)
    # Mutual inhibition suppresses both neurons.
    free = driven_pair_reference(drive, inhibit=0.0, **pair_kwargs(**PAIR_GRID))
    assert torch.all(pair < free)


def test_driven_pair_undriven_with_excitation_equals_two_neuron_reference():
    drive = torch.zeros(2, PAIR["n_time"], dtype=F64)
    links = {"excite_01": 30.0, "excite_10": 8.0, "inhibit": 1.0}
    pair = driven_pair_reference(drive, **links, **pair_kwargs(**PAIR_GRID))
    expected = two_neuron_reference(**PAIR, **links, **PAIR_GRID)
    torch.testing.assert_close(pair, torch.tensor(expected, dtype=F64), rtol=1e-8, atol=0)


def test_driven_chain_excites_its_second_neuron_only_through_the_link():
    """x → 0 → 1: neuron 1 spikes more when neuron 0 is driven, and not at all without ε01."""
    drive = pair_drive(50.0, 0.0)
    kwargs = pair_kwargs(**PAIR_GRID)
    linked = driven_pair_reference(drive, inhibit=0.0, excite_01=40.0, **kwargs)
    undriven = driven_pair_reference(0 * drive, inhibit=0.0, excite_01=40.0, **kwargs)
    unlinked = driven_pair_reference(drive, inhibit=0.0, **kwargs)
    assert linked[1] > undriven[1] and linked[1] > unlinked[1]
    # The link's back-reaction deepens neuron 0's well: it spikes less than alone.
    assert linked[0] < unlinked[0]


def test_a_constant_deepening_is_a_higher_well():
    """U = V0 + h·φ² + K·(φ² − 1)² is the neuron of Λ' = Λ + 4K; its ⟨V0_Λ⟩ = Λ/Λ'·⟨V0_Λ'⟩."""
    drive = pair_drive(50.0, 20.0)
    deepening = torch.tensor([[5.0], [12.0]], dtype=F64)
    v0, x2, quartic = neuron_moments(drive, None, deepening, **pair_kwargs())
    for row in range(2):
        deeper = PAIR["lam"] + 4.0 * deepening[row].item()
        profile = single_neuron_profile(
            drive[row], None, time_extent=PAIR["time_extent"], lam=deeper
        )
        torch.testing.assert_close(v0[row], PAIR["lam"] / deeper * profile, rtol=1e-7, atol=0)
    plain, x2_plain, _ = neuron_moments(drive, None, None, **pair_kwargs())
    torch.testing.assert_close(plain, single_neuron_profile(drive, None, **pair_kwargs()))
    # A deeper well holds the path nearer ±1: ⟨φ²⟩ moves towards 1 and (φ² − 1)⁴ shrinks.
    assert ((x2 - 1).abs() < (x2_plain - 1).abs()).all() and (quartic > 0).all()


def test_three_neurons_with_a_free_one_equal_the_pair_and_the_single_neuron():
    links = torch.zeros(3, 3, dtype=F64)
    links[0, 1], links[1, 0] = 30.0, 8.0
    mutual = torch.zeros(3, 3, dtype=F64)
    mutual[0, 1] = mutual[1, 0] = 1.0
    triple = three_neuron_reference(**PAIR, excite=links, inhibit=mutual, grid_points=40)
    pair = two_neuron_reference(**PAIR, excite_01=30.0, excite_10=8.0, inhibit=1.0, grid_points=40)
    free = two_neuron_reference(**PAIR, grid_points=40)
    torch.testing.assert_close(triple, torch.tensor([*pair, free[0]], dtype=F64), rtol=1e-7, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"excite": torch.zeros(2, 2)}, "excite"),
        ({"excite": -torch.ones(3, 3)}, "excite"),
        ({"inhibit": torch.triu(torch.ones(3, 3))}, "symmetric"),
        ({"grid_points": 65}, "grid_points"),
    ],
)
def test_three_neuron_reference_rejects_bad_arguments(kwargs: dict, name: str):
    arguments = {"excite": torch.zeros(3, 3)} | kwargs
    with pytest.raises(ValueError, match=name):
        three_neuron_reference(**PAIR, **arguments)


def test_driven_pair_batched_equals_separate_calls():
    generator = torch.Generator().manual_seed(2)
    scale = 60.0 * torch.rand(3, 2, 1, dtype=F64, generator=generator)
    drive = scale * pair_drive(1.0, 1.0)
    kwargs = pair_kwargs(grid_points=32, phi_max=3.0)
    batched = driven_pair_reference(drive, inhibit=2.0, **kwargs)
    single = torch.stack([driven_pair_reference(d, inhibit=2.0, **kwargs) for d in drive])
    assert batched.shape == (3, 2)
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=0)


def test_driven_pair_grid_precision():
    # Measured: drive (50, 20)·g, η = 1, grid_points = 36 (automatic φ_max) against the
    # automatic M = 51 differ by 4.2e-10 relative (8.7e-11 at η = 0 against M = 44;
    # at η = 10 it is 2.8e-6 against M = 84, where M = 60 gives 5e-11).
    drive = pair_drive(50.0, 20.0)
    automatic = driven_pair_reference(drive, inhibit=1.0, **pair_kwargs())
    coarse = driven_pair_reference(drive, inhibit=1.0, **pair_kwargs(grid_points=36))
    change = relative_change(coarse, automatic)
    print(f"driven pair η=1: grid_points=36 vs automatic changes {change:.1e}")
    assert change < 1e-8


PAIR_DRIVE = torch.zeros(2, 8, dtype=F64)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"drive": PAIR_DRIVE - 1.0}, "drive"),
        ({"drive": PAIR_DRIVE + math.nan}, "drive"),
        ({"drive": torch.zeros(8, dtype=F64)}, "drive"),
        ({"drive": torch.zeros(3, 8, dtype=F64)}, "drive"),
        ({"drive": torch.zeros(2, 0, dtype=F64)}, "drive"),
        ({"inhibit": -0.5}, "inhibit"),
        ({"inhibit": math.nan}, "inhibit"),
        ({"excite_01": -1.0}, "excite_01"),
        ({"excite_10": math.inf}, "excite_10"),
        ({"time_extent": 0.0}, "time_extent"),
        ({"time_extent": math.inf}, "time_extent"),
        ({"lam": -5.0}, "lam"),
        ({"grid_points": 8}, "grid_points"),
        ({"grid_points": 101}, "grid_points"),
        ({"inhibit": 100.0, "time_extent": 2.0, "drive": torch.zeros(2, 32)}, "grid_points"),
        ({"phi_max": 1.0}, "phi_max"),
    ],
)
def test_driven_pair_rejects_bad_arguments(kwargs: dict, name: str):
    arguments = {"drive": PAIR_DRIVE, "inhibit": 0.0, "time_extent": 1.0, "lam": 20.0} | kwargs
    drive = arguments.pop("drive")
    with pytest.raises(ValueError, match=name):
        driven_pair_reference(drive, **arguments)
