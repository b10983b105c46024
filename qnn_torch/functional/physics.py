"""Pure tensor functions for the lattice action of a network of double-well neurons.

Conventions (unit mass, ħ = 1). A path φ has shape (..., Nt) on a periodic lattice of
spacing a = T / Nt. The action of a network with N simulated neurons is

    S = Σ_t [ Σ_n ( (φ_{n,t+1} − φ_{n,t})² / (2a) + a·V0(φ_{n,t}) )
              + a·Σ_{i→j} ε_ij·φ_{j,t}²·(φ_{i,t}² − 1)²
              + a·Σ_{i<j} η_ij·(φ_{i,t}² − 1)⁴·(φ_{j,t}² − 1)⁴ ],

with V0(φ) = Λ/4·(φ² − 1)². Fixed input paths ψ enter the same terms; for a simulated
neuron they reduce to per-slice fields (see :func:`input_fields`).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


class NotRealError(TypeError, ValueError):
    """A value that must be real is complex, boolean, not a number, or a tensor without data
    (a ``meta`` tensor). Both a TypeError and a ValueError."""


def real_number(name: str, value: object) -> float:
    """``value`` as a Python float (numpy and other real scalars converted); NotRealError
    naming ``name`` for a bool, a complex number, a tensor or anything else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise NotRealError(f"{name} must be a real number, got {value!r}")
    return float(value)


def real_tensor(name: str, value: object) -> Tensor:
    """``value`` as a tensor (``torch.as_tensor``: a tensor is not copied; numbers, nested
    sequences and numpy arrays are converted), checked to hold real numbers: NotRealError
    naming ``name`` for complex or bool entries, a meta tensor (no data), or a value that
    is no number, sequence or array of numbers."""
    if isinstance(value, bool | complex | str | bytes):
        raise NotRealError(f"{name} must be a real number or tensor, got {value!r}")
    if isinstance(value, numbers.Real):
        return torch.as_tensor(float(value), dtype=torch.float64)
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise NotRealError(
                f"{name} must be a real number or tensor, got {type(value).__name__} {value!r}"
            ) from None
    if value.is_complex() or value.dtype == torch.bool or value.is_meta:
        kind = "meta" if value.is_meta else str(value.dtype).removeprefix("torch.")
        raise NotRealError(f"{name} must hold real numbers, got a {kind} tensor")
    return value


def double_well(phi: Tensor, lam: float) -> Tensor:
    """V0(φ) = Λ/4·(φ² − 1)², elementwise, shape of ``phi`` (one fresh tensor, in-place steps:
    it is measured every sweep)."""
    w = phi * phi
    return w.sub_(1.0).square_().mul_(0.25 * lam)


def potential_sum(phi: Tensor, lam: float) -> Tensor:
    """Σ_t V0(φ_t) over the last axis: (..., Nt) → (...).

    The measured observable of a neuron, and for the input path ψ the activity
    normalisation Σ_t V0(ψ_t).
    """
    return double_well(phi, lam).sum(-1)


def excitation_energy(phi_src: Tensor, phi_dst: Tensor, strength: float | Tensor) -> Tensor:
    """Excitatory coupling density ε·φ_dst²·(φ_src² − 1)² (per unit τ), elementwise.

    Asymmetric: a spike of the source (φ_src ≈ 0) pulls the destination towards 0.
    """
    return strength * phi_dst * phi_dst * (phi_src * phi_src - 1.0) ** 2


def inhibition_energy(phi_a: Tensor, phi_b: Tensor, strength: float | Tensor) -> Tensor:
    """Inhibitory coupling density η·(φ_a² − 1)⁴·(φ_b² − 1)⁴ (per unit τ), elementwise."""
    return strength * (phi_a * phi_a - 1.0) ** 4 * (phi_b * phi_b - 1.0) ** 4


def kink_width_rate(lam: float) -> float:
    """√(Λ/2): the inverse width of the classical kink tanh(√(Λ/2)·(τ − τ_k))."""
    return math.sqrt(lam / 2.0)


def kink_action(lam: float) -> float:
    """Action of one classical kink in the continuum, 2√(2Λ)/3."""
    return 2.0 * math.sqrt(2.0 * lam) / 3.0


def validate_lattice(n_time: int, time_extent: float, lam: float) -> None:
    """Raise ValueError naming the argument for an invalid lattice or potential."""
    if isinstance(n_time, bool) or not isinstance(n_time, int) or n_time < 2 or n_time % 2:
        raise ValueError(f"n_time must be an even integer >= 2, got {n_time!r}")
    if not math.isfinite(time_extent) or time_extent <= 0:
        raise ValueError(f"time_extent must be a finite number > 0, got {time_extent!r}")
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")


def validate_non_negative(name: str, value: Tensor) -> None:
    """Raise ValueError naming ``name`` and its first bad entry unless every entry of
    ``value`` is finite and ≥ 0 (strengths, drives, inhibitions)."""
    bad = ~torch.isfinite(value) | (value < 0)
    if bad.any():
        raise ValueError(
            f"{name} must be finite and >= 0 everywhere, got {value[bad].flatten()[0].item()!r}"
        )


def validate_kinks(n_kinks: int) -> None:
    """Raise ValueError unless n_kinks is an even, non-negative integer (periodic paths)."""
    if isinstance(n_kinks, bool) or not isinstance(n_kinks, int) or n_kinks < 0 or n_kinks % 2:
        raise ValueError(f"n_kinks must be an even integer >= 0, got {n_kinks!r}")


def kink_times(n_kinks: int, time_extent: float) -> Tensor:
    """Equally spaced kink centres τ_k = (k + 1/2)·T / n_kinks, shape (n_kinks,), float64."""
    validate_kinks(n_kinks)
    return (torch.arange(n_kinks, dtype=torch.float64) + 0.5) * (time_extent / max(n_kinks, 1))


def kink_path(
    n_time: int,
    time_extent: float,
    lam: float,
    n_kinks: int,
    *,
    centers: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Active input path ψ_t = Π_k tanh(√(Λ/2)·(τ_t − τ_k)), τ_t = t·a; shape (n_time,).

    The kinks are equally spaced (see :func:`kink_times`) unless ``centers`` gives them.
    Each factor uses the periodic distance to its centre, wrapped into [−T/2, T/2), so the
    path is periodic; an even number of kinks makes the product continuous across τ = T.
    Zero kinks give the vacuum ψ ≡ 1.
    """
    validate_lattice(n_time, time_extent, lam)
    validate_kinks(n_kinks)
    if centers is None:
        centers = kink_times(n_kinks, time_extent)
    centers = torch.as_tensor(centers, dtype=torch.float64)
    if centers.shape != (n_kinks,):
        raise ValueError(f"centers must have shape ({n_kinks},), got {tuple(centers.shape)}")
    tau = torch.arange(n_time, dtype=torch.float64) * (time_extent / n_time)
    dist = tau[:, None] - centers[None, :]
    dist = torch.remainder(dist + 0.5 * time_extent, time_extent) - 0.5 * time_extent
    # Sign convention: a kink at τ_k flips the sign; on a circle the sign of dist is
    # ambiguous half a period away, so combine the product with the plain (unwrapped)
    # ordering of the kinks, which gives a continuous periodic path for an even count.
    sign = torch.where((tau[:, None] >= centers[None, :]).sum(-1) % 2 == 1, -1.0, 1.0)
    path = sign * torch.tanh(kink_width_rate(lam) * dist.abs()).prod(-1)
    return path.to(dtype=dtype, device=device)


def spike_profile(path: Tensor) -> Tensor:
    """g_t = (ψ_t² − 1)²: where and how strongly an input path spikes. Shape of ``path``."""
    return (path * path - 1.0) ** 2


def input_spike(n_time: int, time_extent: float, lam: float, n_kinks: int) -> tuple[Tensor, float]:
    """The lattice's active input: the spike profile g_t of its kink path ψ, shape (Nt,)
    float64, and Σ_t V0(ψ_t), which normalises the activity."""
    path = kink_path(n_time, time_extent, lam, n_kinks, dtype=torch.float64)
    return spike_profile(path), float(potential_sum(path, lam))


def input_fields(brightness: Tensor, excite: Tensor, inhibit: Tensor) -> tuple[Tensor, Tensor]:
    """Amplitudes of the fields that fixed inputs exert on simulated neurons.

    With g_t the spike profile of the shared active path and b_i the brightnesses, input i
    adds a·ε_in·b_i·g_t·φ_n² (excitation) and a·η_in·b_i²·g_t²·(φ_n² − 1)⁴ (inhibition)
    to neuron n. Returns (drive, inhibition) amplitudes α_n = Σ_i ε_in·b_i and
    β_n = Σ_i η_in·b_i², each of shape (..., N); the fields are α_n·g_t and β_n·g_t².

    Shapes: brightness (..., I), excite and inhibit (..., I, N).
    """
    drive = torch.einsum("...i,...in->...n", brightness, excite)
    inhibition = torch.einsum("...i,...in->...n", brightness * brightness, inhibit)
    return drive, inhibition


def action_density(phi: Tensor, spacing: float, lam: float) -> Tensor:
    """Action per unit τ of each slice (paper Fig. 1): (..., Nt) → (..., Nt).

    s_t = (φ_{t+1} − φ_t)² / (2a²) + V0(φ_t), so that a·Σ_t s_t is the lattice action of a
    free neuron. A kink shows as a bump of area ≈ 2√(2Λ)/3.
    """
    diff = torch.roll(phi, -1, dims=-1) - phi
    return diff * diff / (2.0 * spacing * spacing) + double_well(phi, lam)


def kinetic_action(phi: Tensor, spacing: float) -> Tensor:
    """Σ_t (φ_{t+1} − φ_t)² / (2a) over the periodic last axis: (..., Nt) → (...)."""
    diff = torch.roll(phi, -1, dims=-1) - phi
    return (diff * diff).sum(-1) / (2.0 * spacing)


def network_action(
    phi: Tensor,
    *,
    spacing: float,
    lam: float,
    drive: Tensor,
    input_inhibition: Tensor,
    excite: Tensor,
    inhibit: Tensor,
) -> Tensor:
    """Total lattice action S of a network (formula in the module docstring).

    Shapes: phi (..., N, Nt); drive and input_inhibition (..., N, Nt) are the input fields
    h_{n,t} and H_{n,t}; excite (..., N, N) holds ε[src, dst]; inhibit (..., N, N) is
    symmetric with zero diagonal. Returns (...).
    """
    x = phi * phi
    w = (x - 1.0) ** 2
    potential = double_well(phi, lam) + drive * x + input_inhibition * w * w
    # Every ordered pair (i, j) as (..., N, N, Nt): source i, destination j.
    src, dst = phi[..., :, None, :], phi[..., None, :, :]
    coupled = excitation_energy(src, dst, excite[..., None]).sum((-3, -2)) + 0.5 * (
        inhibition_energy(src, dst, inhibit[..., None]).sum((-3, -2))
    )
    return kinetic_action(phi, spacing).sum(-1) + spacing * (
        potential.sum((-2, -1)) + coupled.sum(-1)
    )
