"""The pure physics functions: kinks, brightness encoding, action."""

import math

import pytest
import torch

import qnn_torch
from qnn_torch.functional import (
    action_density,
    double_well,
    excitation_energy,
    inhibition_energy,
    kink_action,
    kink_path,
    network_action,
    potential_sum,
)


def test_kink_action_matches_closed_form():
    # Two far-apart kinks on a fine lattice: the lattice action is 2·2√(2Λ)/3.
    lam, n_time, extent = 5000.0, 8192, 0.7
    path = kink_path(n_time, extent, lam, 2, dtype=torch.float64)
    spacing = extent / n_time
    action = spacing * action_density(path, spacing, lam).sum()
    assert math.isclose(kink_action(lam), 2 * math.sqrt(2 * lam) / 3)
    assert action.item() == pytest.approx(2 * kink_action(lam), rel=2e-3)


def test_kink_path_shape_symmetry_and_public_name():
    path = qnn_torch.kink_path(512, 0.7, 5000.0, 4)
    assert path.shape == (512,) and path.dtype == torch.float32
    assert (path.abs() <= 1).all()
    # Four sign changes (kinks), periodic: the first and last slices sit in the same vacuum.
    positive = path > 0
    assert int((positive != positive.roll(1)).sum()) == 4
    assert path[0] > 0.99 and path[-1] > 0.99
    assert torch.equal(kink_path(16, 0.7, 5000.0, 0), torch.ones(16))


def test_coupling_energies():
    phi_src, phi_dst = torch.tensor(0.0), torch.tensor(0.5)
    assert excitation_energy(phi_src, phi_dst, 2.0) == pytest.approx(2.0 * 0.25)
    assert excitation_energy(torch.tensor(1.0), phi_dst, 2.0) == 0.0
    assert inhibition_energy(torch.tensor(0.0), torch.tensor(0.0), 3.0) == 3.0
    assert double_well(torch.tensor(0.0), 8.0) == 2.0


def test_network_action_of_uncoupled_neurons_is_the_sum_of_single_actions():
    torch.manual_seed(0)
    phi = torch.randn(2, 3, 16, dtype=torch.float64)
    spacing, lam = 0.1, 7.0
    zeros = torch.zeros(2, 3, 16, dtype=torch.float64)
    coupling = torch.zeros(2, 3, 3, dtype=torch.float64)
    total = network_action(
        phi,
        spacing=spacing,
        lam=lam,
        drive=zeros,
        input_inhibition=zeros,
        excite=coupling,
        inhibit=coupling,
    )
    single = spacing * action_density(phi, spacing, lam).sum((-2, -1))
    assert torch.allclose(total, single)


def test_network_action_of_constant_paths_matches_the_hand_written_terms():
    # φ0 ≡ 0 spikes, φ1 ≡ c sits near its well: no kinetic term, and per slice
    # U = V0(0) + V0(c) + h0·0 + h1·c² + H1·(c² − 1)⁴ + ε01·c²·1 + ε10·0 + η·1·(c² − 1)⁴.
    n_time, spacing, lam, c = 8, 0.25, 4.0, 1.5
    phi = torch.stack([torch.zeros(n_time), torch.full((n_time,), c)]).double()
    drive = torch.tensor([[2.0], [3.0]]).double().expand(2, n_time)
    inhibition = torch.tensor([[7.0], [0.5]]).double().expand(2, n_time)
    excite = torch.tensor([[0.0, 5.0], [11.0, 0.0]]).double()
    inhibit = torch.tensor([[0.0, 0.1], [0.1, 0.0]], dtype=torch.float64)
    action = network_action(
        phi,
        spacing=spacing,
        lam=lam,
        drive=drive,
        input_inhibition=inhibition,
        excite=excite,
        inhibit=inhibit,
    )
    w = (c * c - 1.0) ** 2  # 1.5625
    per_slice = lam / 4 + lam / 4 * w + 3.0 * c * c + 7.0 + 0.5 * w * w + 5.0 * c * c + 0.1 * w * w
    assert action.item() == pytest.approx(n_time * spacing * per_slice, rel=1e-12)


def test_potential_sum_is_the_activity_normalisation():
    path = kink_path(512, 0.7, 5000.0, 4, dtype=torch.float64)
    # Four kinks, each ∫V0 dτ = half the kink action: Σ_t V0(ψ_t)·a ≈ 2·S_kink.
    assert (0.7 / 512) * potential_sum(path, 5000.0).item() == pytest.approx(
        2 * kink_action(5000.0), rel=2e-3
    )
    assert potential_sum(torch.ones(3, 4), 5.0).shape == (3,)
    assert potential_sum(torch.zeros(2, 4), 5.0).tolist() == [5.0, 5.0]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_time": 511}, "n_time"),
        ({"time_extent": 0.0}, "time_extent"),
        ({"time_extent": -1.0}, "time_extent"),
        ({"lam": 0.0}, "lam"),
        ({"n_kinks": 3}, "n_kinks"),
        ({"n_kinks": -2}, "n_kinks"),
    ],
)
def test_kink_path_rejects_bad_lattice(kwargs, name):
    args = {"n_time": 512, "time_extent": 0.7, "lam": 5000.0, "n_kinks": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        kink_path(**args)
