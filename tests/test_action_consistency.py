"""Every move's ΔS equals a difference of the reference action network_action.

On random coupled networks (excitation and inhibition between neurons, input drive and
input inhibition, float64) the moves' own action differences, captured as the sampler
computes them, are compared with S(new) − S(old) of
:func:`qnn_torch.functional.physics.network_action` for the same old and new paths.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import Tensor

from qnn_torch import Network, SamplerConfig
from qnn_torch.functional import sampler
from qnn_torch.functional.physics import kinetic_action, kink_path, network_action, spike_profile
from qnn_torch.functional.sampler import LatticeFields
from qnn_torch.functional.threefry import sweep_key

F64 = torch.float64
LATTICE = {"n_time": 16, "time_extent": 1.6, "lam": 20.0, "n_kinks": 2}


def random_network(seed: int) -> tuple[LatticeFields, dict[str, Tensor]]:
    """A batch of 3 random four-neuron networks: (their fields, network_action's arguments)."""
    generator = torch.Generator().manual_seed(seed)

    def strength(scale: float) -> Tensor:
        return scale * (0.5 + torch.rand(3, dtype=F64, generator=generator))

    net = Network().add_input("x", strength(0.6)).add_input("z", 0.7)
    for name in "abcd":
        net.add_neuron(name)
    net.excite("x", "a", strength(40.0)).excite("z", "b", strength(30.0))
    net.excite("x", "c", strength(20.0)).inhibit("z", "d", strength(5.0))
    net.inhibit("x", "a", strength(3.0))
    net.excite("a", "b", strength(10.0)).excite("b", "c", strength(8.0))
    net.excite("d", "a", strength(6.0)).inhibit("a", "c", strength(4.0))
    net.inhibit("b", "d", strength(2.0))
    c = net.compile(SamplerConfig(**LATTICE, dtype=F64))
    assert c.excite is not None and c.inhibit is not None and len(c.color_bounds) > 1
    fields = LatticeFields(
        lam=LATTICE["lam"],
        spacing=LATTICE["time_extent"] / LATTICE["n_time"],
        profile=c.profile,
        drive=c.drive,
        input_inhibition=c.input_inhibition,
        excite=c.excite,
        inhibit=c.inhibit,
        color_bounds=c.color_bounds,
    )
    profile = spike_profile(kink_path(**LATTICE, dtype=F64))
    assert torch.equal(profile, c.profile)
    reference = {
        "spacing": fields.spacing,
        "lam": fields.lam,
        "drive": c.drive[..., None] * profile,
        "input_inhibition": c.input_inhibition[..., None] * profile**2,
        "excite": c.excite,
        "inhibit": c.inhibit,
    }
    return fields, reference


def random_paths(fields: LatticeFields, seed: int) -> Tensor:
    """Paths (R, N, Nt) spread over both wells and the barrier."""
    generator = torch.Generator().manual_seed(seed)
    R, N = fields.drive.shape
    signs = torch.where(torch.rand(R, N, 1, generator=generator, dtype=F64) < 0.5, -1.0, 1.0)
    noise = 0.4 * torch.randn(R, N, fields.profile.numel(), generator=generator, dtype=F64)
    return signs * (1.0 + noise)


def capture(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple]:
    """Record (args, kwargs, result) of every call of sampler.<name>, cloned at call time."""
    calls: list[tuple] = []
    original = getattr(sampler, name)

    def clone(value):
        if isinstance(value, Tensor):
            return value.clone()
        if isinstance(value, (list, tuple)):
            return type(value)(clone(v) for v in value)
        return value

    def recording(*args, **kwargs):
        inputs = clone(args)
        result = original(*args, **kwargs)
        calls.append((inputs, kwargs, clone(result)))
        return result

    monkeypatch.setattr(sampler, name, recording)
    return calls


def state_before(start: Tensor, end: Tensor, updated: list[tuple[int, int, Tensor]]) -> Tensor:
    """The path before a move: ``end`` where earlier moves updated, else ``start``.

    ``updated`` lists (c0, c1, slices) that earlier moves of the pass changed; each site is
    updated once per pass, so its value afterwards is its final one.
    """
    state = start.clone()
    for c0, c1, slices in updated:
        state[:, c0:c1, slices] = end[:, c0:c1, slices]
    return state


def action_change(reference: dict, old: Tensor, changed: Tensor) -> Tensor:
    """S(changed) − S(old): changed (K, R, N, Nt) are K variants of old (R, N, Nt)."""
    return network_action(changed, **reference) - network_action(old, **reference)


def without_links(fields: LatticeFields, reference: dict) -> tuple[LatticeFields, dict]:
    """The same neurons and inputs with their links removed: K is the float Λ/4 then."""
    N = fields.drive.shape[1]
    unlinked = replace(fields, excite=None, inhibit=None, color_bounds=((0, N),))
    zeros = torch.zeros_like(reference["excite"])
    return unlinked, {**reference, "excite": zeros, "inhibit": zeros}


@pytest.mark.parametrize("numbers", ["generator", "counters"])
@pytest.mark.parametrize("linked", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_local_move_delta_s_is_the_reference_action_difference(seed, linked, numbers, monkeypatch):
    """Every site's −ΔS is the reference action difference, whichever source the random
    numbers come from (a torch.Generator, or Threefry counters): the neighbours, parities and
    colours of the sweep are those of the action."""
    fields, reference = random_network(seed)
    if not linked:
        fields, reference = without_links(fields, reference)
    start = random_paths(fields, seed)
    calls = capture(monkeypatch, "local_log_ratio")
    phi = start.clone()
    if numbers == "generator":
        generator = torch.Generator().manual_seed(seed)
        sampler.local_sweep(phi, fields, width=0.6, generator=generator)
    else:
        rows = torch.arange(phi.shape[0])
        key = sweep_key(seed, 3)
        sampler.counter_local_sweep(phi, fields, width=0.6, key=key, rows=rows)

    Nt = phi.shape[-1]
    order = [(parity, c0, c1) for parity in (0, 1) for c0, c1 in fields.color_bounds]
    assert len(calls) == len(order)
    updated: list[tuple[int, int, Tensor]] = []
    accepted = 0
    for (parity, c0, c1), (args, _, log_ratio) in zip(order, calls, strict=True):
        cur, step = args[0], fields.spacing * args[1]  # args[1]: the step in units of a
        slices = torch.arange(parity, Nt, 2)
        old = state_before(start, phi, updated)
        assert torch.equal(cur, old[:, c0:c1, slices])
        changed = old.expand(c1 - c0, Nt // 2, *old.shape).clone()
        for n in range(c1 - c0):
            for j, t in enumerate(slices.tolist()):
                changed[n, j, :, c0 + n, t] += step[:, n, j]
        expected = action_change(reference, old, changed).permute(2, 0, 1)  # (R, n, Nt/2)
        torch.testing.assert_close(-log_ratio, expected, rtol=1e-10, atol=1e-10)
        # The sweep moved each site by its step or not at all.
        moved = phi[:, c0:c1, slices] - cur
        assert torch.all((moved == 0) | torch.isclose(moved, step, rtol=1e-12, atol=1e-12))
        accepted += int((moved != 0).sum())
        updated.append((c0, c1, slices))
    assert 0 < accepted < phi.numel()  # the check saw both accepted and rejected moves


@pytest.mark.parametrize(("seed", "offset"), [(0, 0), (1, 3), (2, 14)])
def test_bisection_final_stage_is_the_reference_potential_difference(seed, offset, monkeypatch):
    fields, reference = random_network(seed)
    start = random_paths(fields, seed)
    calls = capture(monkeypatch, "bisection_stage_actions")
    phi = start.clone()
    levels = 2
    L = 2**levels
    rows = torch.arange(phi.shape[0])
    draw = sampler.counter_draw(rows, sweep_key(seed, 5))
    sampler.bisection_pass(phi, fields, levels=levels, offset=offset, draw=draw)

    Nt = phi.shape[-1]
    m = Nt // L
    assert len(calls) == len(fields.color_bounds)
    # Block j's slices p = 0 … L − 1 sit at times (j·L + p + offset) mod Nt; p = 0 is fixed.
    blocks = (torch.arange(m)[:, None] * L + torch.arange(L) + offset) % Nt
    updated: list[tuple[int, int, Tensor]] = []
    for (c0, c1), (args, _, stages) in zip(fields.color_bounds, calls, strict=True):
        new, cur = args[0], args[1]
        old = state_before(start, phi, updated)
        assert torch.equal(cur, old[:, c0:c1, blocks])
        assert torch.equal(new[..., 0], cur[..., 0])  # the blocks' fixed ends
        n = c1 - c0
        changed = old.expand(n, m, *old.shape).clone()
        for i in range(n):
            for j in range(m):
                changed[i, j, :, c0 + i, blocks[j]] = new[:, i, j]
        total = action_change(reference, old, changed)  # (n, m, R)
        kinetic = kinetic_action(changed, reference["spacing"]).sum(-1) - kinetic_action(
            old, reference["spacing"]
        ).sum(-1)
        # The bridge samples the kinetic action exactly: the last stage holds the rest.
        expected = (total - kinetic).permute(2, 0, 1)  # (R, n, m)
        assert stages.shape[-1] == levels
        torch.testing.assert_close(stages[..., -1], expected, rtol=1e-10, atol=1e-10)
        # Each block is either the proposal or unchanged.
        final = phi[:, c0:c1, blocks]
        assert torch.all(torch.eq(final, new).all(-1) | torch.eq(final, cur).all(-1)), (
            "a block is neither old nor new"
        )
        updated.append((c0, c1, blocks.flatten()))


@pytest.mark.parametrize("seed", [0, 1])
def test_sign_cluster_couplings_are_the_reference_action_differences(seed):
    # Flipping the signs of slices s … e of one neuron (periodically) costs the bond terms
    # at its two ends: ΔS = −(r_{s−1} + r_e) with r = bond_log_ratio.
    fields, reference = random_network(seed)
    phi = random_paths(fields, seed)
    R, N, Nt = phi.shape
    ratio = sampler.bond_log_ratio(phi, fields.spacing)
    assert ratio.shape == phi.shape
    starts, lengths = torch.meshgrid(torch.arange(Nt), torch.arange(1, Nt), indexing="ij")
    starts, lengths = starts.flatten(), lengths.flatten()
    slices = (starts[:, None] + torch.arange(Nt)) % Nt
    inside = torch.arange(Nt) < lengths[:, None]  # (K, Nt) over the offsets from s
    flip = torch.ones(len(starts), Nt, dtype=F64)
    flip.scatter_(1, slices, torch.where(inside, -1.0, 1.0).double())
    ends = (starts + lengths - 1) % Nt
    for n in range(N):
        changed = phi.expand(len(starts), R, N, Nt).clone()
        changed[:, :, n] *= flip[:, None, :]
        expected = -(ratio[:, n, starts - 1] + ratio[:, n, ends])  # (R, K)
        torch.testing.assert_close(
            action_change(reference, phi, changed), expected.T, rtol=1e-10, atol=1e-10
        )
