"""Exact lattice expectations by transfer matrices: the oracles for the Monte Carlo sampler.

Each neuron has a periodic Euclidean path φ_t, t = 0..Nt−1, spacing a = T/Nt, unit mass, and

    S[φ] = Σ_t [ (φ_{t+1} − φ_t)² / (2a) + a·U_t(φ_t) ],
    U_t(φ) = V0(φ) + h_t·φ² + H_t·(φ² − 1)⁴,    V0(φ) = Λ/4·(φ² − 1)².

The integrals over φ_t ∈ ℝ are done by the trapezoid rule on a uniform grid φ_i, which is
spectrally accurate for these smooth, Gaussian-decaying integrands, so that the path integral
becomes a trace of transfer matrices. All work is float64 on the CPU.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from qnn_torch.functional.physics import (
    double_well,
    excitation_energy,
    inhibition_energy,
    potential_sum,
    real_number,
    real_tensor,
    spike_profile,
    validate_non_negative,
)

_DTYPE = torch.float64
# Automatic grid (see _grid): φ_max = 1 + _TAIL_WIDTHS·ζ, and a spacing whose trapezoid error,
# weighted by where the path has weight, stays below exp(−_ALIAS_EXPONENT).
_TAIL_WIDTHS = 8.0
_ALIAS_EXPONENT = 30.0
_MIN_GRID_POINTS = 16
# Largest automatic φ grid of one neuron: the cost grows as M³ per slice (M ≈ 110 at the
# paper's lattice); lattices that need more cannot be resolved (T → 0).
_MAX_GRID_POINTS = 4096
# Largest grid of two_neuron_reference: M² = 10⁴ states, four parity blocks of 2500.
_MAX_PAIR_GRID_POINTS = 100
# three_neuron_reference: at most 64³ grid states; it keeps the _TRIPLE_STATES leading
# eigenstates of the transfer matrix and refuses lattices where the rest would weigh more
# than _TRIPLE_TRUNCATION (relative, per state).
_MAX_TRIPLE_GRID_POINTS = 64
_TRIPLE_STATES = 32
_TRIPLE_TRUNCATION = 1e-9
# Bytes of suffix products kept at once; larger batches are processed in chunks.
_MAX_STORED_BYTES = 2**28
# Transfer-matrix entries (all at most O(1)) below this are set to 0: they are far below the
# target accuracy, and left alone they decay into subnormal numbers that slow matmul down.
_NEGLIGIBLE = 1e-200


def _check_positive(name: str, value: float) -> None:
    if not math.isfinite(real_number(name, value)) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if not math.isfinite(real_number(name, value)) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_grid(grid_points: int, phi_max: float) -> None:
    if grid_points != 0 and grid_points < _MIN_GRID_POINTS:
        raise ValueError(
            f"grid_points must be 0 (automatic) or >= {_MIN_GRID_POINTS}, got {grid_points!r}"
        )
    if not math.isfinite(phi_max) or (phi_max != 0 and phi_max <= 1):
        raise ValueError(f"phi_max must be 0 (automatic) or a finite number > 1, got {phi_max!r}")


def _lattice_correlation(n_time: int, spacing: float, omega_sq: Tensor) -> tuple[Tensor, Tensor]:
    """⟨φ_t²⟩ and ⟨φ_t·φ_{t+1}⟩ of the periodic lattice oscillator U = ω²φ²/2, shapes of omega_sq.

    ⟨φ_t·φ_{t+d}⟩ = (1/(Nt·a))·Σ_k cos(2πkd/Nt) / ((4/a²)·sin²(πk/Nt) + ω²).
    """
    angle = torch.arange(n_time, dtype=_DTYPE) * (math.pi / n_time)
    inverse = 1.0 / (4.0 * torch.sin(angle) ** 2 / spacing**2 + omega_sq[..., None])
    scale = 1.0 / (n_time * spacing)
    return inverse.sum(dim=-1) * scale, (inverse * torch.cos(2.0 * angle)).sum(dim=-1) * scale


def _grid(
    n_time: int,
    spacing: float,
    lam: float,
    extra: tuple[float, float, float],
    grid_points: int,
    phi_max: float,
    alias_exponent: float = _ALIAS_EXPONENT,
) -> Tensor:
    """Uniform grid on [−φ_max, φ_max], shape (M,); 0 arguments are chosen automatically.

    ζ² = ⟨φ_t²⟩ of the lattice oscillator with ω² = 2Λ (a well's zero-point width) and
    φ_max = 1 + 8ζ. For the spacing Δφ, the potential is V0 + c·E with c ∈ [0, 1] and the
    bound E(φ) = Λ_E/4·(φ² − 1)² + h·φ² + H·(φ² − 1)⁴, (Λ_E, h, H) = extra. Near |φ| = x ≥ 1 it is
    replaced by the lattice oscillator with ω² = U''(x), whose trapezoid error along its
    narrowest lattice direction, s² = min(⟨φ_t²⟩, ⟨(φ_t − φ_{t+1})²⟩), is exp(−2π²s²/Δφ²).
    Weighted by exp(−(x − 1)²/(2ζ²) − a·c·(E(x) − E(1))), it must stay below
    exp(−``alias_exponent``) for all x and c. M = ⌈2φ_max/Δφ⌉ + 1.
    """
    zeta = _lattice_correlation(n_time, spacing, torch.tensor(2.0 * lam, dtype=_DTYPE))[0].sqrt()
    if phi_max == 0:
        phi_max = 1.0 + _TAIL_WIDTHS * zeta.item()
    if grid_points == 0:
        x = torch.linspace(1.0, 1.0 + _TAIL_WIDTHS * zeta.item(), 257, dtype=_DTYPE)
        c = torch.linspace(0.0, 1.0, 9, dtype=_DTYPE)[:, None]
        x2 = x * x
        s = x2 - 1.0
        well, drive, inhibition = extra
        curvature = lam * (3.0 * x2 - 1.0) + c * (
            well * (3.0 * x2 - 1.0) + 2.0 * drive + inhibition * (8.0 * s**3 + 48.0 * x2 * s**2)
        )
        penalty = c * spacing * (0.25 * well * s**2 + drive * s + inhibition * s**4)
        local, neighbour = _lattice_correlation(n_time, spacing, curvature)
        width_sq = torch.minimum(local, 2.0 * (local - neighbour))
        budget = alias_exponent - (x - 1.0) ** 2 / (2.0 * zeta**2) - penalty
        keep = budget > 0
        dphi = (math.pi * (2.0 * width_sq[keep] / budget[keep]).sqrt()).min().item()
        if not dphi > 2.0 * phi_max / _MAX_GRID_POINTS:
            raise ValueError(
                f"time_extent={n_time * spacing:.3g} with lam={lam:g} and n_time={n_time}: the "
                f"transfer matrix would need a φ grid finer than {_MAX_GRID_POINTS} points "
                f"over [−{phi_max:.3g}, {phi_max:.3g}] (the kinetic kernel is too narrow): use "
                "a longer time_extent, or fewer slices"
            )
        grid_points = max(math.ceil(2.0 * phi_max / dphi) + 1, _MIN_GRID_POINTS)
    return torch.linspace(-phi_max, phi_max, grid_points, dtype=_DTYPE)


def _product_grid(
    n_time: int,
    spacing: float,
    lam: float,
    extra: tuple[float, float, float],
    grid_points: int,
    phi_max: float,
    neurons: int = 2,
) -> Tensor:
    """:func:`_grid` for ``neurons`` neurons on the product grid (M^neurons states):
    ValueError above _MAX_PAIR_GRID_POINTS (two) or _MAX_TRIPLE_GRID_POINTS (three)."""
    phi = _grid(n_time, spacing, lam, extra, grid_points, phi_max)
    limit = _MAX_PAIR_GRID_POINTS if neurons == 2 else _MAX_TRIPLE_GRID_POINTS
    if phi.numel() > limit:
        words = {2: "two neurons (M² states)", 3: "three neurons (M³ states)"}
        raise ValueError(
            f"grid_points must be <= {limit} for {words[neurons]}, "
            f"got {phi.numel()}{' (automatic)' if grid_points == 0 else ''}; "
            "pass a smaller grid_points"
        )
    return phi


def _parity_bases(m: int) -> list[tuple[Tensor, Tensor]]:
    """Orthonormal even and odd bases on a grid of m points symmetric about 0.

    Returns [(Q_even, i_even), (Q_odd, i_odd)]: Q has shape (m, m_p) with columns ∝
    e_i ± e_{m−1−i} for i ≥ (m − 1)/2 (the centre of an odd grid only in the even basis);
    i has shape (m_p,), each column's index i.
    """
    bases = []
    for sign, first in ((1.0, m // 2), (-1.0, (m + 1) // 2)):
        index = torch.arange(first, m)
        columns = torch.arange(index.numel())
        basis = torch.zeros(m, index.numel(), dtype=_DTYPE)
        basis[index, columns] = 1.0
        basis[m - 1 - index, columns] += sign
        bases.append((basis / basis.norm(dim=0), index))
    return bases


def _kinetic_kernel(phi: Tensor, spacing: float) -> Tensor:
    """G_ij = exp(−(φ_i − φ_j)²/(2a))·Δφ/√(2πa), shape (M, M).

    The factor Δφ/√(2πa) makes Z the path integral with measure Π_t dφ_t/√(2πa).
    """
    dphi = (phi[1] - phi[0]).item()
    diff = phi[:, None] - phi[None, :]
    kernel = torch.exp(-diff.square() / (2.0 * spacing))
    kernel.masked_fill_(kernel < _NEGLIGIBLE, 0.0)
    return kernel * (dphi / math.sqrt(2.0 * math.pi * spacing))


def _transfer_profile(
    potential: Tensor, phi: Tensor, observable: Tensor, spacing: float
) -> tuple[Tensor, Tensor]:
    """Per-slice ⟨O(φ_t)⟩ and log Z for the action Σ_t [(φ_{t+1} − φ_t)²/(2a) + a·U_t(φ_t)].

    potential: (B, Nt, M) values U_t(φ_i); phi: (M,) uniform grid; observable: (M,) O(φ_i),
    or (M, K) for K observables at once. With A_t = diag(exp(−a·U_t))·G,
    Z = Tr A_0⋯A_{Nt−1}, and by cyclicity ⟨O(φ_t)⟩ = Σ_i O_i·d_i / Σ_i d_i with
    d = diag(S_t·P_t), P_t = A_0⋯A_{t−1}, S_t = A_t⋯A_{Nt−1}. Products are renormalised to
    max entry 1 as they are built; the scales go to log Z. Returns ((B, Nt) or (B, Nt, K),
    (B,)).
    """
    batch, n_time, m = potential.shape
    kernel = _kinetic_kernel(phi, spacing)
    shift = potential.amin(dim=-1)
    weight = torch.exp(-spacing * (potential - shift[..., None]))
    weight.masked_fill_(weight < _NEGLIGIBLE, 0.0)

    suffix = torch.empty(batch, n_time, m, m, dtype=_DTYPE)
    log_scale = -spacing * shift.sum(dim=-1)
    product = torch.eye(m, dtype=_DTYPE).expand(batch, m, m)
    for t in range(n_time - 1, -1, -1):
        product = (weight[:, t, :, None] * kernel) @ product
        norm = product.amax(dim=(-2, -1))
        product = product / norm[:, None, None]
        product.masked_fill_(product < _NEGLIGIBLE, 0.0)
        log_scale = log_scale + norm.log()
        suffix[:, t] = product
    log_z = product.diagonal(dim1=-2, dim2=-1).sum(dim=-1).log() + log_scale

    profile = torch.empty(batch, n_time, *observable.shape[1:], dtype=_DTYPE)
    prefix = torch.eye(m, dtype=_DTYPE).expand(batch, m, m)
    for t in range(n_time):
        if t > 0:
            prefix = prefix @ (weight[:, t - 1, :, None] * kernel)
            prefix = prefix / prefix.amax(dim=(-2, -1))[:, None, None]
            prefix.masked_fill_(prefix < _NEGLIGIBLE, 0.0)
        diag = torch.einsum("bij,bji->bi", suffix[:, t], prefix)
        total = diag.sum(dim=-1)
        profile[:, t] = (diag @ observable) / (total if observable.dim() == 1 else total[:, None])
    return profile, log_z


def single_neuron_profile(
    drive: Tensor,
    inhibition: Tensor | None,
    *,
    time_extent: float,
    lam: float,
    grid_points: int = 0,
    phi_max: float = 0.0,
) -> Tensor:
    """Exact lattice expectations ⟨V0(φ_t)⟩ of one neuron, shape (..., Nt).

    drive: (..., Nt) fields h_t ≥ 0; inhibition: (..., Nt) fields H_t ≥ 0 or None for 0,
    broadcast with drive. grid_points / phi_max = 0 choose one grid for the whole batch,
    converged to ~1e-9 relative: φ_max = 1 + 8ζ (ζ the lattice zero-point width of a well) and a
    spacing that resolves the kinetic kernel and the curvature of U_t with the batch's largest
    fields (see :func:`_grid`). Cost ~4·Nt·M³ flops and 8·Nt·M² bytes per batch element
    (Λ = 5000, T = 0.7, Nt = 512: M ≈ 110, 0.1–0.3 s). Float64 CPU result.
    """
    _check_positive("time_extent", time_extent)
    _check_positive("lam", lam)
    _check_grid(grid_points, phi_max)
    drive = real_tensor("drive", drive).detach().to(device="cpu", dtype=_DTYPE)
    if drive.ndim == 0 or drive.shape[-1] == 0:
        raise ValueError(f"drive must have shape (..., Nt) with Nt >= 1, got {tuple(drive.shape)}")
    validate_non_negative("drive", drive)
    if inhibition is None:
        inhibition = torch.zeros((), dtype=_DTYPE)
    else:
        inhibition = real_tensor("inhibition", inhibition).detach().to(device="cpu", dtype=_DTYPE)
        validate_non_negative("inhibition", inhibition)
    drive, inhibition = torch.broadcast_tensors(drive, inhibition)

    n_time = drive.shape[-1]
    spacing = time_extent / n_time
    extra = (0.0, drive.max().item(), inhibition.max().item())
    phi = _grid(n_time, spacing, lam, extra, grid_points, phi_max)
    v0 = double_well(phi, lam)
    x2 = phi * phi
    quartic = (x2 - 1.0) ** 4
    flat_drive = drive.reshape(-1, n_time, 1)
    flat_inhibition = inhibition.reshape(-1, n_time, 1)
    chunk = max(1, _MAX_STORED_BYTES // (8 * n_time * phi.numel() ** 2))
    profiles = [
        _transfer_profile(v0 + h * x2 + big_h * quartic, phi, v0, spacing)[0]
        for h, big_h in zip(flat_drive.split(chunk), flat_inhibition.split(chunk), strict=True)
    ]
    return torch.cat(profiles).reshape(drive.shape)


def neuron_moments(
    drive: Tensor,
    inhibition: Tensor | None,
    deepening: Tensor | None,
    *,
    time_extent: float,
    lam: float,
    grid_points: int = 0,
    phi_max: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact per-slice ⟨V0(φ_t)⟩, ⟨φ_t²⟩ and ⟨(φ_t² − 1)⁴⟩ of one neuron in external fields.

    U_t(φ) = V0(φ) + h_t·φ² + H_t·(φ² − 1)⁴ + K_t·(φ² − 1)²: drive h, inhibition H and
    deepening K (each None for 0), (..., Nt) ≥ 0 and broadcast together. K is the field of
    excitatory links *from* this neuron, K_t = Σ_j ε_j·φ_{j,t}² with the targets' paths
    held fixed (the observable V0 keeps Λ). Returns three (..., Nt) float64 CPU tensors;
    grids as for :func:`single_neuron_profile`.
    """
    _check_positive("time_extent", time_extent)
    _check_positive("lam", lam)
    _check_grid(grid_points, phi_max)
    fields = []
    for name, value in (("drive", drive), ("inhibition", inhibition), ("deepening", deepening)):
        value = torch.zeros((), dtype=_DTYPE) if value is None else value
        value = real_tensor(name, value).detach().to(device="cpu", dtype=_DTYPE)
        validate_non_negative(name, value)
        fields.append(value)
    drive, inhibition, deepening = torch.broadcast_tensors(*fields)
    if drive.ndim == 0 or drive.shape[-1] == 0:
        raise ValueError(f"fields must have shape (..., Nt) with Nt >= 1, got {tuple(drive.shape)}")
    n_time = drive.shape[-1]
    spacing = time_extent / n_time
    extra = (4.0 * deepening.max().item(), drive.max().item(), inhibition.max().item())
    phi = _grid(n_time, spacing, lam, extra, grid_points, phi_max)
    v0 = double_well(phi, lam)
    x2 = phi * phi
    quadratic = (x2 - 1.0) ** 2
    observables = torch.stack([v0, x2, quadratic**2], dim=-1)
    flat = [f.reshape(-1, n_time, 1) for f in (drive, inhibition, deepening)]
    chunk = max(1, _MAX_STORED_BYTES // (8 * n_time * phi.numel() ** 2))
    moments = [
        _transfer_profile(
            v0 + h * x2 + big_h * quadratic**2 + k * quadratic, phi, observables, spacing
        )[0]
        for h, big_h, k in zip(*(f.split(chunk) for f in flat), strict=True)
    ]
    if not moments:
        empty = torch.empty(drive.shape, dtype=_DTYPE)
        return empty, empty.clone(), empty.clone()
    stacked = torch.cat(moments).reshape(*drive.shape, 3)
    return stacked[..., 0], stacked[..., 1], stacked[..., 2]


def single_neuron_reference(
    drive: Tensor,
    inhibition: Tensor | None,
    *,
    time_extent: float,
    lam: float,
    grid_points: int = 0,
    phi_max: float = 0.0,
) -> Tensor:
    """Exact lattice expectation ⟨Σ_t V0(φ_t)⟩ of one neuron, shape (...).

    Arguments as for :func:`single_neuron_profile`, whose result is summed over t.
    """
    return single_neuron_profile(
        drive,
        inhibition,
        time_extent=time_extent,
        lam=lam,
        grid_points=grid_points,
        phi_max=phi_max,
    ).sum(dim=-1)


def single_neuron_activity(
    drive: Tensor,
    inhibition: Tensor | None,
    path: Tensor,
    *,
    time_extent: float,
    lam: float,
    grid_points: int = 0,
    phi_max: float = 0.0,
) -> Tensor:
    """Exact activity ⟨Σ_t V0(φ_t)⟩ / Σ_t V0(ψ_t) of one neuron under the input path ψ.

    drive α (...) and inhibition β (...) or None are the amplitudes of the input fields
    h_t = α·g_t and H_t = β·g_t², g_t = (ψ_t² − 1)² (see
    :func:`~qnn_torch.functional.physics.input_fields`); path ψ has shape (Nt,). Grid
    arguments as for :func:`single_neuron_profile`. Returns (...), float64 CPU.
    ValueError for a path that is not 1-D and finite or has Σ_t V0(ψ_t) = 0 (no kink: the
    activity is undefined), or a drive or inhibition that is not finite and ≥ 0.
    """
    path = real_tensor("path", path).detach().to(device="cpu", dtype=_DTYPE)
    if path.dim() != 1 or not torch.isfinite(path).all():
        raise ValueError(f"path must be a finite 1-D tensor (Nt,), got shape {tuple(path.shape)}")
    _check_positive("lam", lam)
    norm = potential_sum(path, lam)
    if not norm > 0:
        raise ValueError(
            "path has Σ_t V0(ψ_t) = 0 (it stays in a well): the activity is normalised by it"
        )
    profile = spike_profile(path)
    drive = real_tensor("drive", drive).detach().to(device="cpu", dtype=_DTYPE)
    validate_non_negative("drive", drive)
    if inhibition is not None:
        inhibition = real_tensor("inhibition", inhibition).detach().to(device="cpu", dtype=_DTYPE)
        validate_non_negative("inhibition", inhibition)
        inhibition = inhibition[..., None] * profile * profile
    expected = single_neuron_reference(
        drive[..., None] * profile,
        inhibition,
        time_extent=time_extent,
        lam=lam,
        grid_points=grid_points,
        phi_max=phi_max,
    )
    return expected / norm


def two_neuron_reference(
    *,
    n_time: int,
    time_extent: float,
    lam: float,
    excite_01: float = 0.0,
    excite_10: float = 0.0,
    inhibit: float = 0.0,
    grid_points: int = 0,
    phi_max: float = 0.0,
) -> tuple[float, float]:
    """Exact (⟨Σ_t V0(φ_{0,t})⟩, ⟨Σ_t V0(φ_{1,t})⟩) for two coupled neurons without inputs.

    Per slice, U(φ0, φ1) = V0(φ0) + V0(φ1) + ε01·φ1²·(φ0² − 1)² + ε10·φ0²·(φ1² − 1)²
    + η·(φ0² − 1)⁴·(φ1² − 1)⁴. On the product grid (M² states) the symmetric transfer matrix
    K = D^½·(G⊗G)·D^½, D = diag(exp(−a·U)), has eigenpairs (λ_k, v_k); Z = Σ_k λ_k^Nt and the
    distribution of one slice is p_s = Σ_k λ_k^Nt·v_k[s]² / Z. U is even in φ0 and in φ1, so K
    is diagonalised in its four parity blocks of ~M²/4 states. Meant for coarse cases (M ≲ 60:
    about a second); the automatic grid is the single-neuron rule with each coupling bounded by
    its value for the partner at |y| ≤ 1. M > 100 raises ValueError: pass a smaller grid_points
    (strong inhibit can ask for M > 100 for 1e-9, where M = 60 gives ~1e-6).
    """
    if isinstance(n_time, bool) or not isinstance(n_time, int) or n_time < 1:
        raise ValueError(f"n_time must be an integer >= 1, got {n_time!r}")
    _check_positive("time_extent", time_extent)
    _check_positive("lam", lam)
    _check_non_negative("excite_01", excite_01)
    _check_non_negative("excite_10", excite_10)
    _check_non_negative("inhibit", inhibit)
    _check_grid(grid_points, phi_max)

    spacing = time_extent / n_time
    # Couplings seen by one neuron for the automatic grid, the partner's y within |y| ≤ 1:
    # ε·φ²·(y² − 1)² ≤ ε·φ², ε·y²·(φ² − 1)² ≤ ε·(φ² − 1)², η·(φ² − 1)⁴·(y² − 1)⁴ ≤ η·(φ² − 1)⁴.
    excite = max(excite_01, excite_10)
    phi = _product_grid(n_time, spacing, lam, (4.0 * excite, excite, inhibit), grid_points, phi_max)
    m = phi.numel()
    v0 = double_well(phi, lam)
    # Row index i ↔ φ0 = phi[i], column j ↔ φ1 = phi[j].
    phi_0, phi_1 = phi[:, None], phi[None, :]
    potential = (
        v0[:, None]
        + v0[None, :]
        + excitation_energy(phi_0, phi_1, excite_01)
        + excitation_energy(phi_1, phi_0, excite_10)
        + inhibition_energy(phi_0, phi_1, inhibit)
    )
    half = torch.exp(-0.5 * spacing * (potential - potential.min()))
    kernel = _kinetic_kernel(phi, spacing)
    # U is even in φ0 and in φ1, so K is block diagonal in the four parity sectors.
    top, mass, moment_0, moment_1 = [], [], [], []
    for (basis_0, index_0), (basis_1, index_1) in itertools.product(_parity_bases(m), repeat=2):
        block_half = half[index_0][:, index_1].reshape(-1)
        block_kernel = torch.kron(basis_0.T @ kernel @ basis_0, basis_1.T @ kernel @ basis_1)
        transfer = block_half[:, None] * block_kernel * block_half[None, :]
        transfer.masked_fill_(transfer < _NEGLIGIBLE, 0.0)
        eigvals, eigvecs = torch.linalg.eigh(transfer)
        weights = (eigvals / eigvals[-1]) ** n_time
        density = (eigvecs.square() @ weights).reshape(index_0.numel(), index_1.numel())
        top.append(eigvals[-1])
        mass.append(weights.sum())
        moment_0.append(density.sum(dim=1) @ v0[index_0])
        moment_1.append(density.sum(dim=0) @ v0[index_1])
    scale = (torch.stack(top) / max(top)) ** n_time
    z = scale @ torch.stack(mass)
    return (
        n_time * (scale @ torch.stack(moment_0) / z).item(),
        n_time * (scale @ torch.stack(moment_1) / z).item(),
    )


def three_neuron_reference(
    *,
    n_time: int,
    time_extent: float,
    lam: float,
    excite: Tensor,
    inhibit: Tensor | None = None,
    grid_points: int = 0,
    phi_max: float = 0.0,
) -> Tensor:
    """Exact ⟨Σ_t V0(φ_{n,t})⟩, n = 0, 1, 2, of three linked neurons without inputs, (3,).

    Per slice, U = Σ_n V0(φ_n) + Σ_{i≠j} ε_ij·φ_j²·(φ_i² − 1)² + Σ_{i<j} η_ij·(φ_i² − 1)⁴·
    (φ_j² − 1)⁴ with ``excite`` ε (3, 3) indexed [src, dst] and the symmetric ``inhibit``
    η (3, 3) or None; diagonals are ignored. On the product grid (M³ states) the symmetric
    transfer matrix K = D^½·(G⊗G⊗G)·D^½ is applied factor by factor (3·M⁴ flops per
    vector), and its leading eigenpairs come from subspace iteration with Rayleigh–Ritz.
    Z = Σ_k λ_k^Nt and ⟨V0(φ_n)⟩ = Σ_k λ_k^Nt·⟨v_k|V0_n|v_k⟩ / Z over the kept states; the
    states left out weigh at most λ_last^(Nt−1)·(Tr K − Σ_kept λ) / Σ_kept λ^Nt together
    (every left-out λ ≤ λ_last, and Tr K is the sum of K's diagonal), and ValueError is
    raised where that exceeds 1e-9 (a lattice whose excited states matter: a longer
    time_extent or a larger lam) or where a kept pair's residual ‖Kv − λv‖, times its
    weight (λ/λ_0)^Nt, exceeds 1e-9·λ_0.
    Automatic grid as for two_neuron_reference, each coupling bounded by its value for
    partners at |y| ≤ 1; at most 64 points.
    """
    if isinstance(n_time, bool) or not isinstance(n_time, int) or n_time < 1:
        raise ValueError(f"n_time must be an integer >= 1, got {n_time!r}")
    _check_positive("time_extent", time_extent)
    _check_positive("lam", lam)
    _check_grid(grid_points, phi_max)
    links = {}
    for name, value in (("excite", excite), ("inhibit", inhibit)):
        value = torch.zeros(3, 3) if value is None else value
        value = real_tensor(name, value).detach().to(device="cpu", dtype=_DTYPE)
        if value.shape != (3, 3):
            raise ValueError(f"{name} must have shape (3, 3), got {tuple(value.shape)}")
        validate_non_negative(name, value)
        links[name] = value * (1.0 - torch.eye(3, dtype=_DTYPE))
    eps, eta = links["excite"], links["inhibit"]
    if not torch.equal(eta, eta.t()):
        raise ValueError("inhibit must be symmetric: η_ij = η_ji")

    spacing = time_extent / n_time
    incoming, outgoing = eps.sum(0).max().item(), eps.sum(1).max().item()
    bound = (4.0 * outgoing, incoming, eta.sum(1).max().item())
    phi = _product_grid(n_time, spacing, lam, bound, grid_points, phi_max, neurons=3)
    m = phi.numel()
    v0 = double_well(phi, lam)
    axes = [phi.reshape(-1, 1, 1), phi.reshape(1, -1, 1), phi.reshape(1, 1, -1)]
    potential = sum(double_well(a, lam) for a in axes)
    for i, j in itertools.permutations(range(3), 2):
        potential = potential + excitation_energy(axes[i], axes[j], eps[i, j].item())
    for i, j in itertools.combinations(range(3), 2):
        potential = potential + inhibition_energy(axes[i], axes[j], eta[i, j].item())
    half = torch.exp(-0.5 * spacing * (potential - potential.min()))[..., None]
    kernel = _kinetic_kernel(phi, spacing)

    def transfer(vectors: Tensor) -> Tensor:  # (M, M, M, k) → K·vectors
        out = half * vectors
        out = torch.einsum("ia,ajkc->ijkc", kernel, out)
        out = torch.einsum("ja,iakc->ijkc", kernel, out)
        out = torch.einsum("ka,ijac->ijkc", kernel, out)
        return half * out

    values, vectors = _leading_eigenpairs(transfer, (m, m, m), _TRIPLE_STATES)
    weights = (values / values[0]) ** n_time
    residual = (transfer(vectors) - values * vectors).square().sum((0, 1, 2)).sqrt()
    if (weights * residual / values[0]).max() > _TRIPLE_TRUNCATION:
        raise ValueError(
            "three_neuron_reference: the transfer matrix's eigenpairs did not converge"
        )
    diagonal = kernel.diagonal()
    trace = (half[..., 0].square() * diagonal[:, None, None] * diagonal[:, None] * diagonal).sum()
    tail = (values[-1] / values[0]) ** (n_time - 1) * (trace - values.sum()) / values[0]
    if tail > _TRIPLE_TRUNCATION * weights.sum():
        raise ValueError(
            f"three_neuron_reference keeps {_TRIPLE_STATES} states, but the rest may still "
            f"weigh {(tail / weights.sum()).item():.2g} of them: the lattice's excited states "
            "matter (a longer time_extent or a larger lam)"
        )
    density = vectors.square() @ weights  # (M, M, M)
    marginals = [density.sum((1, 2)), density.sum((0, 2)), density.sum((0, 1))]
    return n_time * torch.stack([p @ v0 for p in marginals]) / weights.sum()


def _leading_eigenpairs(
    apply: Callable[[Tensor], Tensor], shape: tuple[int, ...], count: int
) -> tuple[Tensor, Tensor]:
    """The ``count`` largest eigenpairs of a symmetric positive operator on ``shape``.

    Subspace iteration on 2·count vectors (seeded start) with Rayleigh–Ritz each step,
    until the kept eigenvalues change by at most 1e-13 relative (ValueError after 500
    steps). Returns values (count,) descending and vectors (*shape, count), orthonormal.
    """
    size = math.prod(shape)
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(size, 2 * count, dtype=_DTYPE, generator=generator))[0]
    previous = None
    for _ in range(500):
        image = apply(basis.reshape(*shape, -1)).reshape(size, -1)
        projected = basis.T @ image
        values, rotation = torch.linalg.eigh(0.5 * (projected + projected.T))
        values, rotation = values.flip(0), rotation.flip(1)
        if previous is not None and torch.allclose(values[:count], previous, rtol=1e-13, atol=0.0):
            vectors = (basis @ rotation[:, :count]).reshape(*shape, count)
            return values[:count], vectors
        previous = values[:count]
        basis = torch.linalg.qr(image @ rotation)[0]
    raise ValueError("the transfer matrix's leading eigenvalues did not converge in 500 steps")


def _pair_block_moments(
    weight: Tensor, kernel_0: Tensor, kernel_1: Tensor, v0_0: Tensor, v0_1: Tensor
) -> tuple[float, Tensor]:
    """log Tr P and Tr Q_n / Tr P of one parity block of the pair transfer product.

    weight: (Nt, m0, m1) values exp(−a·U_t); kernel_n: (m_n, m_n); v0_n: (m_n,). With
    A_t = diag(weight_t)·(G0⊗G1), P ← A_t·P and Q_n ← A_t·Q_n + diag(V0_n)·A_t·P from P = 1,
    Q = 0 (Q_n = −∂P/∂μ_n / a), so that Tr Q_n / Tr P = ⟨Σ_t V0(φ_{n,t})⟩. G0⊗G1 acts on
    [P | Q_0 | Q_1] as one matmul per factor, with a transposed copy between them; P and Q are
    renormalised by P's max entry as they are built. Returns (float, (2,)).
    """
    n_time, m0, m1 = weight.shape
    size = m0 * m1
    columns = 3 * size
    state = torch.zeros(size, 3, size, dtype=_DTYPE)
    state[:, 0] = torch.eye(size, dtype=_DTYPE)
    sources = torch.stack(torch.broadcast_tensors(v0_0[:, None], v0_1[None, :]), dim=-1)
    sources = sources.reshape(size, 2, 1)
    # Few large operations per slice: with threads that wait on each other, many small ones
    # (a batched matmul over m0) are slow when the CPU is shared.
    log_scale, norm = 0.0, 1.0
    for t in range(n_time - 1, -1, -1):
        product = (kernel_0 @ state.view(m0, m1 * columns)).view(m0, m1, columns)
        product = kernel_1 @ product.transpose(0, 1).reshape(m1, m0 * columns)
        torch.mul(
            product.view(m1, m0, columns).transpose(0, 1),
            (weight[t] / norm)[:, :, None],
            out=state.view(m0, m1, columns),
        )
        state[:, 1:].addcmul_(sources, state[:, :1])
        norm = state[:, 0].amax().item()
        log_scale += math.log(norm)
        state.masked_fill_(state < _NEGLIGIBLE * norm, 0.0)
    traces = state.diagonal(dim1=0, dim2=2).sum(dim=-1) / norm
    if traces[0] <= 0:  # a block whose weight is below the float64 range: it drops out
        return -math.inf, torch.zeros(2, dtype=_DTYPE)
    return math.log(traces[0].item()) + log_scale, traces[1:] / traces[0]


def driven_pair_reference(
    drive: Tensor,
    *,
    inhibit: float,
    excite_01: float = 0.0,
    excite_10: float = 0.0,
    time_extent: float,
    lam: float,
    grid_points: int = 0,
    phi_max: float = 0.0,
) -> Tensor:
    """Exact (⟨Σ_t V0(φ_{0,t})⟩, ⟨Σ_t V0(φ_{1,t})⟩) of two driven, linked neurons.

    drive: (..., 2, Nt) fields h_{n,t} ≥ 0 of neuron n; returns shape (..., 2), float64 CPU.
    Per slice, U_t(φ0, φ1) = V0(φ0) + V0(φ1) + h_{0,t}·φ0² + h_{1,t}·φ1²
    + ε01·φ1²·(φ0² − 1)² + ε10·φ0²·(φ1² − 1)² + η·(φ0² − 1)⁴·(φ1² − 1)⁴ (ε01 = ``excite_01``
    is the link 0 → 1: a driven chain x → 0 → 1 is drive on neuron 0 and ε01). On the
    product grid (M² states) Z = Tr A_0⋯A_{Nt−1},
    A_t = diag(exp(−a·U_t))·(G⊗G), and ⟨Σ_t V0(φ_{n,t})⟩ = −∂ log Z/∂μ_n / a with sources
    μ_n·V0(φ_n) added to U, carried as forward-mode derivatives through the product (see
    :func:`_pair_block_moments`). U_t is even in φ0 and in φ1, so the product splits into four
    parity blocks of ~M²/4 states: ~1.5·Nt·M⁵ flops and 24·(M²/4)² bytes per batch element.
    One grid serves the batch, automatic as for :func:`two_neuron_reference` with the largest
    drive; M > 100 raises ValueError. Λ = 60, T = 2, Nt = 32: the automatic M is 44 at η = 0
    (0.4 s), 51 at η = 1, 84 at η = 10 (~14 s); grid_points = 36 takes 0.15 s and is within
    1e-10 (η = 0), 5e-10 (η = 1), 3e-6 (η = 10, where M = 60 takes 2 s for 1e-10).
    """
    _check_non_negative("inhibit", inhibit)
    _check_non_negative("excite_01", excite_01)
    _check_non_negative("excite_10", excite_10)
    _check_positive("time_extent", time_extent)
    _check_positive("lam", lam)
    _check_grid(grid_points, phi_max)
    drive = real_tensor("drive", drive).detach().to(device="cpu", dtype=_DTYPE)
    if drive.ndim < 2 or drive.shape[-2] != 2 or drive.shape[-1] == 0:
        raise ValueError(
            f"drive must have shape (..., 2, Nt) with Nt >= 1, got {tuple(drive.shape)}"
        )
    validate_non_negative("drive", drive)

    n_time = drive.shape[-1]
    spacing = time_extent / n_time
    # Grid bounds as in two_neuron_reference, with the partner's y within |y| ≤ 1.
    largest = drive.max().item() if drive.numel() else 0.0
    excite = max(excite_01, excite_10)
    phi = _product_grid(
        n_time, spacing, lam, (4.0 * excite, largest + excite, inhibit), grid_points, phi_max
    )
    m = phi.numel()
    v0 = double_well(phi, lam)
    x2 = phi * phi
    phi_0, phi_1 = phi[:, None], phi[None, :]
    coupling = (
        excitation_energy(phi_0, phi_1, excite_01)
        + excitation_energy(phi_1, phi_0, excite_10)
        + inhibition_energy(phi_0, phi_1, inhibit)
    )
    kernel = _kinetic_kernel(phi, spacing)
    bases = [(basis.T @ kernel @ basis, index) for basis, index in _parity_bases(m)]

    flat = drive.reshape(-1, 2, n_time, 1)
    results = []
    for fields in flat:
        # (Nt, M, M): row index i ↔ φ0 = phi[i], column j ↔ φ1 = phi[j].
        potential = (v0 + fields[0] * x2)[:, :, None] + (v0 + fields[1] * x2)[:, None, :] + coupling
        shift = potential.amin(dim=(-2, -1))
        weight = torch.exp(-spacing * (potential - shift[:, None, None]))
        weight.masked_fill_(weight < _NEGLIGIBLE, 0.0)
        logs, moments = [], []
        for (kernel_0, index_0), (kernel_1, index_1) in itertools.product(bases, repeat=2):
            log_trace, moment = _pair_block_moments(
                weight[:, index_0][:, :, index_1], kernel_0, kernel_1, v0[index_0], v0[index_1]
            )
            logs.append(log_trace)
            moments.append(moment)
        share = torch.tensor(logs, dtype=_DTYPE)
        share = torch.exp(share - share.max())
        results.append(share @ torch.stack(moments) / share.sum())
    if not results:
        return torch.empty(drive.shape[:-1], dtype=_DTYPE)
    return torch.stack(results).reshape(drive.shape[:-1])
