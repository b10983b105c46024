"""Metropolis step functions for the lattice action of a network (pure tensor functions).

A state is a path tensor φ of shape (R, N, Nt): R independent rows (networks × chains),
N simulated neurons, Nt periodic slices of spacing a. The potential density of neuron n at
slice t, given every other neuron, is (from :func:`qnn_torch.functional.physics.network_action`)

    U_{n,t}(φ) = K_{n,t}·(φ² − 1)² + A_{n,t}·φ² + C_{n,t}·(φ² − 1)⁴,

    A = α_n·g_t + Σ_i ε_in·(φ_i² − 1)²,   K = Λ/4 + Σ_j ε_nj·φ_j²,
    C = β_n·g_t² + Σ_j η_nj·(φ_j² − 1)⁴,

where g_t is the spike profile of the inputs and α, β their amplitudes. Neurons in one
colour range [c0, c1) share no link, so their fields do not depend on each other and they
are updated at once. Every move updates ``phi`` in place; the Metropolis moves return
their acceptance counts.

Common random numbers: when no neuron is linked to another (``shared_noise``), the neurons
of one row draw the same random numbers (shape (R, 1, ...), broadcast over N). Each
neuron's chain is then still an exact Metropolis chain of its own distribution, which is
all that its activity and its diagonal gradient statistics read; only the dependence
between neurons changes: neurons with similar drives move together, so the difference of
their activities is measured with a far smaller error, from N times fewer random numbers.
With links, a neuron's field depends on the others' paths and the moves need independent
numbers (the joint distribution would be wrong otherwise).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from qnn_torch.functional import fused_local
from qnn_torch.functional.threefry import (
    normal_box_muller,
    symmetric_step,
    threefry2x32,
    uniform_open,
)


@dataclass(frozen=True)
class LatticeFields:
    """Physics of R rows: what the step functions need besides the path.

    Shapes: profile (Nt,); drive and input_inhibition (R, N); excite and inhibit
    (R, N, N) or None when absent. ``color_bounds`` lists the neuron ranges [c0, c1) that
    may be updated at once. ``shared_noise``: the neurons of a row draw common random
    numbers (module doc); only valid without excite and inhibit.
    """

    lam: float
    spacing: float
    profile: Tensor
    drive: Tensor
    input_inhibition: Tensor | None
    excite: Tensor | None
    inhibit: Tensor | None
    color_bounds: tuple[tuple[int, int], ...]
    shared_noise: bool = False

    def __post_init__(self) -> None:
        if self.shared_noise and (self.excite is not None or self.inhibit is not None):
            raise ValueError(
                "shared_noise needs independent neurons (excite and inhibit None): linked "
                "neurons must draw independent random numbers"
            )

    def rows(self, start: int, stop: int) -> LatticeFields:
        """The same physics restricted to rows [start, stop)."""

        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[start:stop]

        return replace(
            self,
            drive=self.drive[start:stop],
            input_inhibition=cut(self.input_inhibition),
            excite=cut(self.excite),
            inhibit=cut(self.inhibit),
        )


def neuron_fields(
    fields: LatticeFields, phi: Tensor, profile: Tensor, c0: int, c1: int
) -> tuple[Tensor, Tensor | float, Tensor | None]:
    """Fields (A, K, C) of neurons [c0, c1) at a set of slices.

    ``phi`` (R, N, T') holds every neuron at those slices and ``profile`` (T') the spike
    profile there. Returns A (R, c1−c0, T'), K (same shape, or the float Λ/4 without
    outgoing excitation) and C (same shape, or None without inhibition).

    With x = φ² and w = (x − 1)², the links add A_j += Σ_m e_mj·w_m, K_j += Σ_m e_jm·x_m
    and C_j += Σ_m i_jm·w_m², summed over the neurons m outside [c0, c1) alone: a colour
    range has no links within it (a quantum MLP's 64 hidden neurons then multiply by the
    10 outputs' paths, not by all 74).
    """
    A = fields.drive[:, c0:c1, None] * profile
    K: Tensor | float = 0.25 * fields.lam
    C: Tensor | None = None
    if fields.excite is not None or fields.inhibit is not None:
        for m0, m1 in ((0, c0), (c1, phi.shape[1])):
            if m1 == m0:
                continue
            x = phi[:, m0:m1] * phi[:, m0:m1]
            w = (x - 1.0) ** 2
            if fields.excite is not None:
                A = A + torch.matmul(fields.excite[:, m0:m1, c0:c1].transpose(1, 2), w)
                K = K + torch.matmul(fields.excite[:, c0:c1, m0:m1], x)
            if fields.inhibit is not None:
                links = torch.matmul(fields.inhibit[:, c0:c1, m0:m1], w * w)
                C = links if C is None else C + links
    if fields.input_inhibition is not None:
        C_in = fields.input_inhibition[:, c0:c1, None] * (profile * profile)
        C = C_in if C is None else C + C_in
    return A, K, C


def noise_shape(shape: tuple[int, ...], shared: bool, neuron_axis: int) -> tuple[int, ...]:
    """Shape of the random numbers for sites of ``shape``: 1 along ``neuron_axis`` when the
    neurons of a row share them (common random numbers, module doc), else ``shape``."""
    if not shared:
        return tuple(shape)
    axis = neuron_axis % len(shape)
    return (*shape[:axis], 1, *shape[axis + 1 :])


def site_counters(times: Tensor, c0: int, c1: int, shared: bool, n_time: int) -> Tensor:
    """The first counter word n·Nt + t (int32) of neuron n ∈ [c0, c1) at the slices
    ``times`` (int32, any shape), shape (c1 − c0, *times.shape), or (1, *times.shape) with
    n = 0 for every neuron when they share their numbers (``shared``, module doc). Every
    move draws Threefry2x32-20 at the counter (this word, the row's identity) under its
    own key of seed, sweep and move, so a site's numbers do not depend on the batch's
    layout. Words stay below 2³¹ while N·Nt does; their complements ~(n·Nt + t) are a
    second set of counters, disjoint from the first."""
    if shared:
        return times[None]
    neurons = torch.arange(c0, c1, device=times.device, dtype=torch.int32)
    return neurons.view(-1, *(1,) * times.dim()) * n_time + times


def check_counter_range(neurons: int, n_time: int, rows: int) -> None:
    """A ValueError unless every counter of :func:`site_counters` (n·Nt + t < N·Nt) and
    every row identity (< ``rows``) fits in the 31 bits that keep them and their
    complements distinct int32 words."""
    if neurons * n_time >= 2**31 or rows >= 2**31:
        raise ValueError(
            "counter-based numbers need neurons * n_time < 2**31 and rows (networks * "
            f"chains) < 2**31, got neurons={neurons}, n_time={n_time}, rows={rows}"
        )


def row_words(rows: Tensor, dim: int) -> Tensor:
    """The rows' identities (R,) as the second counter word, int32 of shape (R, 1, …, 1)
    with ``dim`` dimensions."""
    return rows.to(torch.int32).view(-1, *(1,) * (dim - 1))


def move_counters(move: str, N: int, n_time: int, shared: bool, device: torch.device) -> Tensor:
    """Every first counter word that ``move`` ("local", "multilevel", "shift" or
    "cluster") may draw at on a lattice of N neurons and ``n_time`` slices, whatever the
    pass's offset, sorted (int32): the set a bank of its words must hold."""
    if move == "shift":
        return _shift_counters(N, n_time, shared, device)
    if move == "cluster":
        return _cluster_counters(N, n_time, shared, device).flatten().sort().values
    times = torch.arange(n_time, dtype=torch.int32, device=device)
    counters = site_counters(times, 0, N, shared, n_time).flatten()
    if move == "multilevel":  # and the complements, the stages'
        return torch.cat((counters.flip(0).bitwise_not(), counters))
    return counters


def counter_words(counters: Tensor, rows: Tensor, keys: tuple[Tensor, Tensor]) -> Tensor:
    """The two words of Threefry2x32-20 at the counters (``counters``[k], ``rows``[r])
    under the keys ``keys`` (two int32 tensors (S,): S stages, such as sweeps): (2, S, R, K)
    int32 for counters (K,) and rows (R,) int32. Flat, so that one compiled graph serves
    every move, shape, dtype and count of stages."""
    k0, k1 = keys
    counter = (counters, rows[:, None])
    return torch.stack(threefry2x32(counter, (k0[:, None, None], k1[:, None, None])))


Draw = Callable[[Tensor], Tensor]
"""The random words of a move: counters (K,) int32 ↦ (2, R, K) int32, the two Threefry
words at (counter, row) for each of the move's R rows, under the key of its seed, sweep
and move (:func:`counter_draw`, or a bank of many sweeps' words that returns the same)."""


def counter_draw(
    rows: Tensor, key: tuple[Tensor, Tensor], words: Callable[..., Tensor] = counter_words
) -> Draw:
    """The :data:`Draw` of the rows' identities ``rows`` (R,) under ``key`` (two 0-d int32
    words, or (1,)), one call of ``words`` (:func:`counter_words`, or its compiled version)
    per draw."""
    keys = (key[0].reshape(1), key[1].reshape(1))
    identities = row_words(rows, 1)
    return lambda counters: words(counters, identities, keys)[:, 0]


def natural_step(spacing: float) -> float:
    """The local move's natural half-width 1.5·√(a/2): the free kinetic term's scale per
    slice, where tuning starts unless a step size is given."""
    return 1.5 * math.sqrt(spacing / 2)


def local_log_ratio(
    cur: Tensor,
    v: Tensor,
    neighbours: Tensor,
    A: Tensor,
    K: Tensor | float,
    C: Tensor | None,
    *,
    spacing: float,
) -> Tensor:
    """−ΔS of the single-site moves φ → φ' = φ + a·v at sites that do not interact (pure).

    ``cur``, ``v`` and ``neighbours`` (..., M): the sites, their proposed steps in units of
    the spacing a, and the sums nb = φ_{t−1} + φ_{t+1} of their time neighbours; A, K, C
    their fields (broadcastable). With the midpoint h = φ + a·v/2 (so φ² + φ'² = 2h² +
    a²v²/2),

        −ΔS = v·(nb − 2a²·h·Y) − a·C·((φ'² − 1)⁴ − (φ² − 1)⁴),
        Y = A + 1/a² + K·(2h² + a²v²/2 − 2),

    the kinetic and K, A terms in one product. Returns −ΔS, shape of ``cur`` (a fresh
    tensor the caller may overwrite).
    """
    a2 = spacing * spacing
    h = torch.add(cur, v, alpha=0.5 * spacing)
    if isinstance(K, Tensor):
        y = h * h
        y.mul_(2.0).addcmul_(v, v, value=0.5 * a2).sub_(2.0).mul_(K).add_(A)
        y.add_(1.0 / a2)
    else:  # K = Λ/4: fold it into the scalars
        y = torch.addcmul(A, h, h, value=2.0 * K)
        y.addcmul_(v, v, value=0.5 * a2 * K).add_(1.0 / a2 - 2.0 * K)
    q = torch.addcmul(neighbours, h, y, value=-2.0 * a2).mul_(v)
    if C is not None:
        new = torch.add(cur, v, alpha=spacing)
        w_new = (new * new - 1.0) ** 2
        w_old = (cur * cur - 1.0) ** 2
        q.sub_(spacing * C * (w_new * w_new - w_old * w_old))
    return q


def uniform_pair(
    shape: tuple[int, ...], half_width: float, *, like: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Two independent uniform tensors of ``shape`` from 48 random bits per element.

    16 bits k (signed) give x = half_width·(k + 1/2)/2¹⁵, on a grid exactly symmetric in
    (−half_width, half_width), as a Metropolis proposal needs; 32 bits j (signed) give
    u = 1/2 + (j + 1/2)/2³², uniform in (0, 1) (in [0, 1] once rounded to float32). Both
    come from int64 draws viewed as int16 and int32 words, in ``like``'s dtype and device:
    on CPU, where mt19937 draws dominate a local sweep of one neuron, 0.75 draws per
    element cost about half of two ``uniform_`` calls.
    """
    count = math.prod(shape)

    def words(dtype: torch.dtype) -> Tensor:
        per_draw = 8 // dtype.itemsize
        draws = torch.empty(-(-count // per_draw), dtype=torch.int64, device=like.device)
        draws.random_(-(2**63), None, generator=generator)
        return draws.view(dtype)[:count].view(shape)

    k, j = words(torch.int16), words(torch.int32)
    # 0-d CPU tensors set the result's dtype and act as scalars on any device (no copy);
    # k + 1/2 is exact, so the grid's symmetry survives the rounding of the product.
    x = torch.add(k, torch.tensor(0.5, dtype=like.dtype)).mul_(half_width / 2**15)
    u = torch.add(torch.tensor(0.5 + 2**-33, dtype=like.dtype), j, alpha=2**-32)
    return x, u


def local_half_sweep(
    cur: Tensor,
    neighbours: Tensor,
    A: Tensor,
    K: Tensor | float,
    C: Tensor | None,
    *,
    width: float,
    spacing: float,
    generator: torch.Generator,
    shared_noise: bool = False,
) -> Tensor:
    """Single-site Metropolis on sites that do not interact with each other (in place).

    ``cur`` (R, n, M) are the sites, ``neighbours`` (R, n, M) the sums φ_{t−1} + φ_{t+1} of
    their time neighbours, A, K, C their fields (broadcastable). Proposal φ' = φ + d with
    d = a·v uniform in [−width, width], accepted with probability min(1, e^{−ΔS}), ΔS from
    :func:`local_log_ratio`: where −ΔS − log u > 0, v and u from :func:`uniform_pair`.
    With ``shared_noise`` the n neurons of a row draw the same v and u (R, 1, M). Returns
    the number of accepted sites (0-d int64).
    """
    shape = noise_shape(cur.shape, shared_noise, 1)
    v, u = uniform_pair(shape, width / spacing, like=cur, generator=generator)
    return metropolis_update(cur, v, u, neighbours, A, K, C, spacing=spacing, out=cur)[1]


def metropolis_update(
    cur: Tensor,
    v: Tensor,
    u: Tensor,
    neighbours: Tensor,
    A: Tensor,
    K: Tensor | float,
    C: Tensor | None,
    *,
    spacing: float,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Accept φ → φ + a·v where −ΔS − log u > 0 (ΔS from :func:`local_log_ratio`) at the
    sites ``cur`` (R, n, M), with steps v and uniforms u (0, 1) broadcastable to it.

    Returns the new sites, written to ``out`` (``cur`` itself for an update in place;
    None: a fresh tensor), and the number of accepted sites (0-d int64). Overwrites ``u``.
    """
    q = local_log_ratio(cur, v, neighbours, A, K, C, spacing=spacing)
    # The 0/1 acceptance as a float, max(sign(−ΔS − log u), 0): cheaper than a bool mask.
    accept = q.sub_(u.log_()).sign_().clamp_min_(0.0)
    new = torch.addcmul(cur, v, accept, value=spacing, out=out)
    # Summed per row first: compiled, the row sums share the update's loop nest.
    return new, accept.sum(-1, dtype=torch.float64).sum().to(torch.int64)


def counter_local_half_sweep(
    cur: Tensor,
    other: Tensor,
    fields: LatticeFields,
    rows: Tensor,
    key: tuple[Tensor, Tensor],
    *,
    parity: int,
    step: Tensor,
    words: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One half of :func:`counter_local_sweep`, a pure function: the ``parity`` slices
    ``cur`` (R, N, Nt/2) updated, every colour range in turn, beside the other parity's
    ``other`` (R, N, Nt/2). Returns the new slices (a fresh tensor) and the accepted
    sites (0-d int64).

    Site (row r, neuron n, slice t) draws the Threefry2x32-20 words of the counter
    (n·Nt + t, ``rows``[r]) (int32) under the sweep's ``key`` (two int32 words, 0-d or one
    per row (R, 1, 1)) (n = 0 for every neuron under ``shared_noise``): the uniform from
    word 0, the proposal from the low 16 bits of word 1, in units of the spacing a, of
    half-width ``step`` (0-d or one per row (R, 1, 1))
    (:mod:`qnn_torch.functional.threefry`). ``words`` (2, R, N or 1, Nt/2), when given,
    are those words already drawn (``rows`` and ``key`` unused). Written in plain tensor
    operations, so that ``torch.compile`` fuses it into one loop nest over (row, slice)
    per colour range.
    """
    N, M = cur.shape[1:]
    # Even slice 2k sees odd slices k−1 and k; odd slice 2k+1 sees even k and k+1.
    neighbours = other + torch.roll(other, 1 if parity == 0 else -1, -1)
    profile = fields.profile.view(M, 2)[:, parity]
    slices = torch.arange(M, device=cur.device, dtype=torch.int32).mul(2).add(parity)
    accepted = torch.zeros((), dtype=torch.int64, device=cur.device)
    for c0, c1 in fields.color_bounds:
        A, K, C = neuron_fields(fields, cur, profile, c0, c1)
        if words is None:
            sites = site_counters(slices, c0, c1, fields.shared_noise, 2 * M)
            w0, w1 = threefry2x32((sites, row_words(rows, 3)), key)
        else:
            w0, w1 = words if fields.shared_noise else words[:, :, c0:c1]
        v = symmetric_step(w1, step, cur.dtype)
        u = uniform_open(w0, cur.dtype)
        new, count = metropolis_update(
            cur[:, c0:c1], v, u, neighbours[:, c0:c1], A, K, C, spacing=fields.spacing
        )
        # Later ranges see this one's update. Compiled, the concatenation beat updating a
        # copy in place: 270–299 against 327–386 ms per image of the 64 → 10 network.
        cur = new if c1 - c0 == N else torch.cat((cur[:, :c0], new, cur[:, c1:]), 1)
        accepted += count
    return cur, accepted


def counter_local_sweep(
    phi: Tensor,
    fields: LatticeFields,
    *,
    width: float,
    key: tuple[Tensor, Tensor],
    rows: Tensor,
    half_sweep: Callable[..., tuple[Tensor, Tensor]] = counter_local_half_sweep,
    draw: Draw | None = None,
) -> Tensor:
    """The checkerboard sweep of :func:`local_sweep` with counter-based random numbers
    (in place).

    Every site draws its numbers from Threefry2x32-20 at the counter (neuron and slice,
    row identity ``rows`` (R,) int64) under the sweep's ``key`` (of a seed and a stage,
    :func:`~qnn_torch.functional.threefry.sweep_key`, made once per sweep): they do not
    depend on the layout of the batch, its chunks or the device. ``half_sweep`` runs each
    half (the compiled :func:`counter_local_half_sweep` where
    ``qnn_torch.functional.compiled`` provides it), drawing the words itself; or, given
    ``draw`` (:data:`Draw`, the same words), it takes them from there.
    Shapes: phi (R, N, Nt). Returns the number of accepted sites.
    """
    R, N, Nt = phi.shape
    pairs = phi.view(R, N, Nt // 2, 2)
    even, odd = pairs[..., 0].contiguous(), pairs[..., 1].contiguous()  # (R, N, Nt/2)
    words: list[Tensor | None] = [None, None]
    if draw is not None:
        sites = site_counters(
            torch.arange(Nt, dtype=torch.int32, device=phi.device), 0, N, fields.shared_noise, Nt
        )
        drawn = draw(sites.flatten()).view(2, R, sites.shape[0], Nt // 2, 2)
        words = [drawn[..., 0], drawn[..., 1]]
    # The same key and step for every row, read per row: inductor realises Threefry's
    # rounds in parts, and a part that read only contiguous words and 0-d scalars would get
    # a flat loop of its own, storing its words; per-row values keep every part in the
    # (row, slice) loop nest of the whole half-sweep (1.4× as many site updates per second
    # at 512 rows from the key; 1.1× on the odd half from the step, at 2048 rows).
    row_key = (key[0].expand(R, 1, 1).contiguous(), key[1].expand(R, 1, 1).contiguous())
    step = torch.full((R, 1, 1), width / fields.spacing, dtype=phi.dtype, device=phi.device)
    even, accepted = half_sweep(
        even, odd, fields, rows, row_key, parity=0, step=step, words=words[0]
    )
    odd, accepted_odd = half_sweep(
        odd, even, fields, rows, row_key, parity=1, step=step, words=words[1]
    )
    pairs[..., 0].copy_(even)
    pairs[..., 1].copy_(odd)
    return accepted + accepted_odd


def local_sweep(
    phi: Tensor, fields: LatticeFields, *, width: float, generator: torch.Generator
) -> Tensor:
    """One checkerboard sweep: even then odd slices × each colour range (in place).

    ``phi`` (R, N, Nt) is updated through an even/odd split copy, so that each half-sweep
    works on contiguous memory. Where :func:`fused_local.supports` it (independent neurons
    on CUDA), the same move runs as one Triton kernel per half-sweep instead. Returns the
    number of accepted sites (0-d int64 tensor).
    """
    if fused_local.supports(phi, fields):
        return fused_local.local_sweep(phi, fields, width=width, generator=generator)
    R, N, Nt = phi.shape
    split = phi.view(R, N, Nt // 2, 2).transpose(-1, -2).contiguous()  # (R, N, 2, Nt/2)
    profile = fields.profile.view(Nt // 2, 2).t()
    accepted = phi.new_zeros((), dtype=torch.int64)
    neighbours = torch.empty_like(split[:, :, 0])
    for parity in (0, 1):
        other = split[:, :, 1 - parity]
        # Even slice 2k sees odd slices k−1 and k; odd slice 2k+1 sees even k and k+1.
        if parity == 0:
            torch.add(other[..., 1:], other[..., :-1], out=neighbours[..., 1:])
            torch.add(other[..., :1], other[..., -1:], out=neighbours[..., :1])
        else:
            torch.add(other[..., :-1], other[..., 1:], out=neighbours[..., :-1])
            torch.add(other[..., -1:], other[..., :1], out=neighbours[..., -1:])
        for c0, c1 in fields.color_bounds:
            A, K, C = neuron_fields(fields, split[:, :, parity], profile[parity], c0, c1)
            accepted += local_half_sweep(
                split[:, c0:c1, parity],
                neighbours[:, c0:c1],
                A,
                K,
                C,
                width=width,
                spacing=fields.spacing,
                generator=generator,
                shared_noise=fields.shared_noise,
            )
    phi.copy_(split.transpose(-1, -2).reshape(R, N, Nt))
    return accepted


def potential_change(
    new: Tensor, old: Tensor, A: Tensor, K: Tensor | float, C: Tensor | None
) -> Tensor:
    """ΔU = U(new) − U(old) of the potential density U (module doc) at each site (pure).

    ``new`` and ``old`` (...) are the values at the sites, A, K, C their fields
    (broadcastable). With x = φ², A·Δx + K·Δw, Δw = Δx·(x_new + x_old − 2), in one product,
    plus C·Δ(w²) with inhibition.
    """
    x_new, x_old = new * new, old * old
    dx = x_new - x_old
    if C is not None:
        w_new, w_old = (x_new - 1.0).square_(), (x_old - 1.0).square_()
        quartic = C * (w_new.square() - w_old.square())
    delta = x_new.add_(x_old).sub_(2.0).mul_(K).add_(A).mul_(dx)
    if C is not None:
        delta += quartic
    return delta


def shift_move(
    phi: Tensor, fields: LatticeFields, *, width: float, draw: Draw
) -> tuple[Tensor, int]:
    """Whole-path Metropolis: φ_{n,t} → φ_{n,t} + δ_n at every slice at once (in place).

    The kinetic term depends on differences of neighbouring slices only, so it does not
    change: ΔS = a·Σ_t ΔU_{n,t} (:func:`potential_change`), exact for a neuron whose links
    go to other colours. δ is uniform on a grid symmetric in (−width, width)
    (:func:`~qnn_torch.functional.threefry.symmetric_step`), one per neuron and row (per
    row with ``shared_noise``), accepted where −ΔS > log u. This moves the path's level,
    the mode that local and bisection moves change only by ~√a per sweep and that
    dominates when the time extent is short (T·√(2Λ) ≲ 1: the kinetic term then holds the
    path nearly constant).

    δ and u come from the two words of Threefry2x32-20 at the counter of the neuron's slice
    0 (:func:`site_counters`) and the row's identity, under the move's key (``draw``,
    :data:`Draw`). Shapes: phi (R, N, Nt). Returns (accepted paths (0-d int64), proposed
    paths).
    """
    R, N, Nt = phi.shape
    accepted = phi.new_zeros((), dtype=torch.int64)
    words = draw(_shift_counters(N, Nt, fields.shared_noise, phi.device))[..., None]
    for c0, c1 in fields.color_bounds:
        old = phi[:, c0:c1]
        A, K, C = neuron_fields(fields, phi, fields.profile, c0, c1)
        w0, w1 = words if fields.shared_noise else words[:, :, c0:c1]
        step, u = symmetric_step(w1, width, phi.dtype), uniform_open(w0, phi.dtype)
        change = potential_change(old + step, old, A, K, C).sum(-1, keepdim=True)
        accept = change.mul_(-fields.spacing).sub_(u.log_()).sign_().clamp_min_(0.0)
        old.addcmul_(step, accept)
        accepted += accept.sum(dtype=torch.float64).to(torch.int64)
    return accepted, R * N


@functools.lru_cache(maxsize=32)
def _shift_counters(N: int, n_time: int, shared: bool, device: torch.device) -> Tensor:
    """The first counter words of :func:`shift_move`, those of each neuron's slice 0,
    n·Nt (N or 1,) (:func:`site_counters`); built once per lattice."""
    first = torch.zeros(1, dtype=torch.int32, device=device)
    return site_counters(first, 0, N, shared, n_time).flatten()


def bisection_stage_actions(
    new: Tensor,
    old: Tensor,
    A: Tensor,
    K: Tensor | float,
    C: Tensor | None,
    *,
    spacing: float,
) -> Tensor:
    """Staged potential actions ΔS_h of bisection proposals, coarsest first (pure).

    ``new`` and ``old`` (..., m, L) are m blocks of L = 2**levels slices p = 0 … L − 1,
    whose first slice p = 0 is the block's fixed end (equal in both); A, K, C their fields
    (broadcastable). With a·ΔU_p the change of a·U at slice p, ΔS_h = h·Σ_{p ≡ 0 (mod h)}
    a·ΔU_p for h = L/2, …, 1, shape (..., m, levels); the last, ΔS_1, is the exact change
    of the potential action. Every stage is odd under new ↔ old, as required.
    """
    delta = potential_change(new, old, A, K, C)  # ΔU_p, 0 at p = 0
    L = delta.shape[-1]
    return torch.stack([delta[..., ::h].sum(-1) * (h * spacing) for h in _halvings(L)], -1)


def _halvings(L: int) -> list[int]:
    """L/2, L/4, …, 1."""
    return [L >> k for k in range(1, L.bit_length())]


def bisection_blocks(
    rotated: Tensor,
    profile: Tensor,
    tents: Tensor,
    fields: LatticeFields,
    draws: list[tuple[Tensor, Tensor]],
) -> tuple[Tensor, Tensor]:
    """The move of :func:`bisection_pass` from its random words, a pure function, on the
    paths ``rotated`` (R, N, Nt) and the spike ``profile`` (Nt,) rotated by its offset:
    the new paths (a fresh tensor, rotated alike) and the accepted blocks (0-d int64).

    ``draws`` holds, for each colour range [c0, c1) of ``fields.color_bounds``, 32-bit
    words (int32) in two planes: the bridge's (2, R, n, m, L/2) (n = c1 − c0, or 1 under
    ``shared_noise``), whose pair j of block b gives two normals
    (:func:`~qnn_torch.functional.threefry.normal_box_muller`): the sine's for the
    midpoint at the block's slice p = 2j (none at p = 0, the fixed end), the cosine's for
    p = 2j + 1; and the stages' (2, R, n, m, ⌈levels/2⌉), where word k mod 2 at slice
    ⌊k/2⌋ is stage k's uniform, coarsest first
    (:func:`~qnn_torch.functional.threefry.uniform_open`).

    The bridge in closed form: with the block's ends φ_0 and φ_L and the normal ξ_h of the
    level-h midpoint q whose interval [q − h, q + h] holds p,
    φ_p = φ_0 + (φ_L − φ_0)·p/L + Σ_h ξ_h·tent_h(p), with ``tents`` (levels, L) =
    √(h·a/2)·(1 − |p − q|/h) at p = 0 … L − 1 (:func:`bridge_tents`): the midpoint rule's
    result (each level adds a tent, linear between the points known before), in few
    passes that ``torch.compile`` fuses into one loop nest.
    """
    N, Nt = rotated.shape[1:]
    L = 2 ** tents.shape[0]
    m = Nt // L
    span = m * L
    ramp = torch.arange(L, dtype=rotated.dtype, device=rotated.device) / L  # p/L
    accepted = torch.zeros((), dtype=torch.int64, device=rotated.device)
    levels = tents.shape[0]
    for (c0, c1), (bridge, stage) in zip(fields.color_bounds, draws, strict=True):
        n = c1 - c0
        # The normals of pairs j (R, n, m, L/2): the sines' for midpoints 2j, the cosines'
        # for 2j + 1.
        sine, cosine = normal_box_muller(bridge[0], bridge[1], rotated.dtype)
        uniforms = uniform_open(stage.movedim(0, -1).flatten(-2)[..., :levels], rotated.dtype)
        old = rotated[:, c0:c1, :span].unflatten(-1, (m, L))
        ends = torch.cat((old[..., 0], rotated[:, c0:c1, span % Nt, None]), -1)  # (R, n, m+1)
        proposal = torch.lerp(ends[..., :-1, None], ends[..., 1:, None], ramp)
        # The bridge's own part Σ_h ξ_h·tent_h, (R, n or 1, m, L), its normals indexed in
        # the form inductor compiles best (either indexing picks the same normals). Under
        # shared noise it is built once per row from the pairs' strided halves, then added
        # (main job's chunk: 1.6 against 2.6 ms per pass when it went into every neuron's
        # proposal). Without, each proposal takes it from the normal of every slice p, the
        # pairs interleaved (R, n, m, L) (linked 64 → 10 pass: 15.7–16.0 against 24.6–26.0
        # ms from the halves, whose sines and cosines inductor recomputed slice by slice).
        if n > bridge.shape[2]:
            bridge_part = sine.new_zeros(*sine.shape[:-1], L)
            normals = None
        else:
            bridge_part = proposal
            normals = torch.stack((sine, cosine), -1).flatten(-2)
        for level, h in enumerate(_halvings(L)):  # midpoints q = h, 3h, …: p in [q − h, q + h)
            if normals is None:
                midpoints = (sine[..., h // 2 :: h] if h > 1 else cosine)[..., None]
            else:
                midpoints = normals[..., h :: 2 * h, None]
            bump = midpoints.expand(*midpoints.shape[:-1], 2 * h).flatten(-2)
            bridge_part.addcmul_(bump, tents[level])
        if bridge_part is not proposal:
            proposal.add_(bridge_part)
        A, K, C = neuron_fields(fields, rotated[..., :span], profile[:span], c0, c1)

        def by_block(t: Tensor | float | None) -> Tensor | float | None:
            return t.unflatten(-1, (m, L)) if isinstance(t, Tensor) else t

        stages = bisection_stage_actions(
            proposal, old, by_block(A), by_block(K), by_block(C), spacing=fields.spacing
        )
        stage_changes = stages.diff(dim=-1, prepend=torch.zeros_like(stages[..., :1]))
        accept = (stage_changes < -torch.log(uniforms)).all(-1)  # (R, n, m)
        # lerp with weight 0 or 1 is exactly old or proposal; torch.where is far slower
        # on CPU eagerly.
        new = torch.lerp(old, proposal, accept[..., None].to(rotated.dtype)).flatten(-2)
        colour = torch.cat((new, rotated[:, c0:c1, span:]), -1) if span < Nt else new
        rotated = torch.cat((rotated[:, :c0], colour, rotated[:, c1:]), 1) if n < N else colour
        accepted += accept.sum()
    return rotated, accepted


@functools.lru_cache(maxsize=32)
def bridge_tents(levels: int, spacing: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """tents[k, p] = √(h·a/2)·(1 − |p mod 2h − h|/h) for h = L/2, …, 1 (k = 0 …
    levels − 1) and p = 0 … L − 1, L = 2**levels: the weight of the level-h normal at
    slice p of a block in :func:`bisection_blocks`, shape (levels, L). The same for every
    pass of a run, so built once (several small kernels and a copy on a GPU)."""
    L = 2**levels
    p = torch.arange(L, dtype=torch.float64)
    rows = [
        (1.0 - ((p % (2 * h)) - h).abs() / h) * math.sqrt(0.5 * h * spacing) for h in _halvings(L)
    ]
    return torch.stack(rows).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=256)
def bisection_times(
    n_time: int, levels: int, offset: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The slices t of a multilevel pass at ``offset`` (:func:`bisection_pass`) whose
    counters it draws at (int32): the even slices p = 2j of each block, (m, L/2), for the
    bridge's normals, and the first ⌈levels/2⌉ slices of each block, (m, ⌈levels/2⌉),
    for the stages. The same for every pass at that offset, so built once (a few small
    operations each time otherwise); Nt values, whatever the neurons."""
    L = 2**levels
    m = n_time // L
    block_times = torch.arange(n_time, dtype=torch.int32, device=device).roll(-offset)
    block_times = block_times[: m * L].view(m, L)  # the slices of the rotated blocks
    return block_times[:, ::2].contiguous(), block_times[:, : (levels + 1) // 2].contiguous()


def bisection_pass(
    phi: Tensor,
    fields: LatticeFields,
    *,
    levels: int,
    offset: int,
    draw: Draw,
    blocks: Callable[..., tuple[Tensor, Tensor]] = bisection_blocks,
) -> tuple[Tensor, int]:
    """Multilevel Metropolis (Ceperley 1995, V.H) on non-overlapping segments (in place).

    The lattice, rotated by ``offset``, is cut into m = ⌊Nt/L⌋ blocks of L = 2**levels
    slices (the last one wraps around when L divides Nt). With both block ends fixed, the
    L − 1 inner slices of every block are regrown from the free Brownian bridge level by
    level: at spacing h = L/2, …, 1 the midpoints get mean (φ_left + φ_right)/2 and
    variance h·a/2. The kinetic action is sampled exactly, so acceptance involves the
    potential alone, in stages: with S_h = h·a·Σ_{p ≡ 0 (mod h)} U_p over the points known
    at level h, stage h accepts with min(1, exp(−[ΔS_h − ΔS_{2h}])) (see
    :func:`bisection_stage_actions`); a block moves only if all stages accept. The last
    stage uses the exact potential, so the move satisfies detailed balance.

    The random numbers are counter-based (:func:`site_counters`): under the move's key (of
    the seed, the sweep and the move) with the rows' identities, the two words at the
    counter n·Nt + t, t the lattice slice of the block's slice p = 2j, give the normals of
    its midpoints p = 2j and 2j + 1 (Box–Muller's pair; p = 0, the fixed end, leaves its
    normal unused), and the block's stage k (coarsest first) its uniform from word k mod 2
    at ~(n·Nt + t) for the block's slice p = ⌊k/2⌋, all in one call of ``draw``
    (:data:`Draw`); they do not depend on the batch's layout. ``blocks``
    (:func:`bisection_blocks`, or its compiled version of
    :mod:`qnn_torch.functional.compiled`) makes the move from them. Shapes: phi (R, N,
    Nt). Returns (accepted blocks, proposed blocks).
    """
    R, N, Nt = phi.shape
    m = Nt // 2**levels
    bridge_slices, stage_slices = bisection_times(Nt, levels, offset, phi.device)
    counters = []  # per colour range: the bridge's (n, m, L/2), the stages' (n, m, ·)
    for c0, c1 in fields.color_bounds:
        counters.append(site_counters(bridge_slices, c0, c1, fields.shared_noise, Nt))
        counters.append(site_counters(stage_slices, c0, c1, fields.shared_noise, Nt).bitwise_not())
    # One call for every colour range: one compiled call's overhead, or eagerly one pass
    # of Threefry's ~140 operations.
    drawn = draw(torch.cat([c.flatten() for c in counters]))
    parts = drawn.split([c.numel() for c in counters], -1)
    planes = [part.view(2, R, *c.shape) for part, c in zip(parts, counters, strict=True)]
    draws = list(zip(planes[::2], planes[1::2], strict=True))
    rotated = phi.roll(-offset, -1)  # time t ↦ t − offset
    profile = fields.profile.roll(-offset, 0)
    tents = bridge_tents(levels, fields.spacing, phi.dtype, phi.device)
    new, accepted = blocks(rotated, profile, tents, fields, draws)
    phi[..., offset:] = new[..., : Nt - offset]
    phi[..., :offset] = new[..., Nt - offset :]
    return accepted, R * N * m


def bond_log_ratio(phi: Tensor, spacing: float) -> Tensor:
    """−2·J_t·σ_t·σ_{t+1} = −2·φ_t·φ_{t+1}/a for each periodic bond t → t+1 (pure).

    Flipping the signs on one side of bond t changes its kinetic term by 2·φ_t·φ_{t+1}/a,
    so a segment flip costs the sum of this over its two boundary bonds. Shapes: phi
    (..., Nt) → (..., Nt), bond t in place t.
    """
    return (phi * phi.roll(-1, -1)).mul_(-2.0 / spacing)


def sign_cluster_flips(phi: Tensor, words: Tensor, *, spacing: float) -> Tensor:
    """The move of :func:`sign_cluster_move` from its random words, a pure function: the
    new paths (a fresh tensor). ``words`` (2, ..., N or 1, Nt/2 + 1) int32: words 0 and 1
    of column j < Nt/2 are the uniforms u
    (:func:`~qnn_torch.functional.threefry.uniform_open`) deciding bonds 2j → 2j + 1 and
    2j + 1 → 2j + 2; word 0 of the last column, the path's overall sign."""
    u = uniform_open(words[..., :-1].movedim(0, -1).flatten(-2), phi.dtype)
    overall = uniform_open(words[0, ..., -1:], phi.dtype)
    # P(bond not frozen) = e^{−2J} for aligned neighbours, 1 for anti-aligned ones.
    free = bond_log_ratio(phi, spacing).clamp_(-80.0, 0.0).exp_()
    # Everything in ±1 and 0/1 floats, whose products are exact (bool tensors convert
    # slowly). coin: −1 where u < e^{−2J}/2 (copysign: u − p = +0 counts as ≥).
    one = phi.new_ones(())
    coin = torch.copysign(one, torch.sub(u, free, alpha=0.5))
    parity = coin.cumprod(-1)  # Π_{k ≤ t} coin_k: −1 where bonds 0 … t hold an odd count
    flips = parity * coin  # Π_{k < t}: the flip of site t relative to site 0
    # first: 1 on the sites of the first cluster (bonds 0 … t − 1 all frozen, u ≥ e^{−2J}):
    # the product of the bonds' 0/1 flags min(sign(u − e^{−2J}) + 1, 1).
    frozen = torch.sub(u[..., :-1], free[..., :-1]).sign_().add_(1.0).clamp_max_(1.0)
    first = torch.cat((torch.ones_like(frozen[..., :1]), frozen), -1).cumprod_(-1)
    # Frozen periodic bond with odd coin parity: flip the first cluster's side too; and the
    # same flips seen from a random overall sign (±1 per path).
    overall = torch.copysign(one, overall - 0.5)
    frozen_last = u[..., -1:] >= free[..., -1:]
    correct = (parity[..., -1:] < 0) & frozen_last
    return phi * flips.mul_(torch.addcmul(overall, first, overall * correct, value=-2.0))


def sign_cluster_move(
    phi: Tensor,
    *,
    spacing: float,
    draw: Draw,
    shared_noise: bool = False,
    flips: Callable[..., Tensor] = sign_cluster_flips,
) -> None:
    """Swendsen–Wang update of the signs of every path (in place, rejection-free).

    Write φ_t = σ_t·|φ_t|. Every term of the action except the kinetic one is even in each
    φ_n, and (φ_{t+1} − φ_t)²/(2a) = (φ_t² + φ_{t+1}²)/(2a) − σ_t·σ_{t+1}·|φ_t·φ_{t+1}|/a,
    so given |φ| the signs of each neuron form a periodic 1-D Ising chain with couplings
    J_t = |φ_t·φ_{t+1}|/a. A bond between aligned neighbours is frozen with probability
    1 − e^{−2J_t}; each cluster of frozen bonds is then flipped with probability 1/2.
    Clusters end where the path is near zero, so this reflects the path between two
    near-zero points: it equilibrates the sign sector between spikes and removes spurious
    kink pairs in one step. Neurons are independent here, so all are updated at once.

    Independent cluster flips are drawn as a fair coin on every broken bond (the relative
    flip of the clusters it separates) times a fair coin per path; one uniform u per bond
    decides both (broken: u < e^{−2J}; coin: u < e^{−2J}/2). Around the periodic chain the
    coins must multiply to one when the bond Nt−1 → 0 is frozen (the last cluster is the
    first); otherwise flipping the first cluster's side restores it, which keeps the flips
    uniform.

    The uniforms are counter-based (:func:`site_counters`): under the move's key (of the
    seed, the sweep and the move) with the rows' identities, bonds 2j → 2j + 1 and
    2j + 1 → 2j + 2 of neuron n take words 0 and 1 at the counter n·Nt + 2j, and the
    path's overall sign word 0 at the complement ~(n·Nt) (``draw``, :data:`Draw`).
    ``flips`` (:func:`sign_cluster_flips`, or its compiled version of
    :mod:`qnn_torch.functional.compiled`) makes the move from them.
    Shapes: phi (R, N, Nt); with ``shared_noise`` the N paths of a row draw the same
    uniforms (R, 1, Nt) and coins (R, 1, 1).
    """
    R, N, Nt = phi.shape
    counters = _cluster_counters(N, Nt, shared_noise, phi.device)
    drawn = draw(counters.flatten()).view(2, R, *counters.shape)
    phi.copy_(flips(phi, drawn, spacing=spacing))


@functools.lru_cache(maxsize=32)
def _cluster_counters(N: int, n_time: int, shared: bool, device: torch.device) -> Tensor:
    """The first counter words of :func:`sign_cluster_move` (N or 1, Nt/2 + 1): n·Nt + t
    at the even slices t (:func:`site_counters`), then ~(n·Nt); built once per lattice."""
    times = torch.arange(0, n_time, 2, dtype=torch.int32, device=device)
    bonds = site_counters(times, 0, N, shared, n_time)
    return torch.cat((bonds, bonds[:, :1].bitwise_not()), 1)
