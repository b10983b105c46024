"""The exact activity of one driven neuron, tabulated once per lattice and interpolated.

A neuron driven by inputs through a shared kink path ψ feels the field α·g_t·φ_t², with
g_t = (ψ_t² − 1)² and α the drive amplitude. Its exact activity

    A(α) = ⟨Σ_t V0(φ_t)⟩_α / Σ_t V0(ψ_t)

is the transfer-matrix expectation of
:func:`~qnn_torch.functional.exact.single_neuron_activity`, an analytic, increasing
function of α ≥ 0. :func:`activity_table` samples it at Chebyshev–Lobatto points of
u = log(1 + α/α₀) on [0, α_max], where it is smooth enough for a short Chebyshev series,
and :meth:`ActivityTable.__call__` evaluates that series (with autograd, so dA/dα comes
with it). ``error_bound`` is the series' largest error measured at 16 points halfway (in
angle) between its nodes; nodes are added (n → 2n − 1, nested) until it is below the
tolerance. A built table is kept on disk (:func:`qnn_torch.cache.load_or_build`), so later
processes load it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from dataclasses import dataclass

import torch
from torch import Tensor

from qnn_torch.cache import load_or_build, source_digest
from qnn_torch.functional import exact, physics
from qnn_torch.functional.exact import single_neuron_activity
from qnn_torch.functional.physics import kink_path, validate_kinks, validate_lattice

# α₀ = lam·DRIVE_SCALE_PER_LAM sets where u = log(1 + α/α₀) bends: at the paper's lattice
# (Λ = 5000) α₀ = 1000, below the drives (~2000–5000) where a neuron starts to spike.
DRIVE_SCALE_PER_LAM = 0.2
# Tables cover [0, α₀·RANGE_BASE**k] for the smallest k ≥ MIN_RANGE_POWER that holds the
# drives asked for, up to MAX_RANGE_POWER (paper lattice: 6.4e4, 2.6e5, ..., 6.6e7).
RANGE_BASE = 4
MIN_RANGE_POWER = 3
MAX_RANGE_POWER = 8
TOLERANCE = 1e-4
_FIRST_NODES = 65
_MAX_NODES = 513
_CHECKS = 16
_DTYPE = torch.float64


def driven_activity(
    drive: Tensor, *, n_time: int, time_extent: float, lam: float, n_kinks: int
) -> Tensor:
    """Exact activity A(α) of one neuron driven with amplitudes α ≥ 0 (...), float64.

    The lattice's kink path ψ with ``n_kinks`` kinks drives it through h_t = α·(ψ_t² − 1)²
    (see :func:`~qnn_torch.functional.exact.single_neuron_activity`).
    """
    path = kink_path(n_time, time_extent, lam, n_kinks, dtype=_DTYPE)
    return single_neuron_activity(drive, None, path, time_extent=time_extent, lam=lam)


def drive_fraction(drive: Tensor, drive_scale: float, max_drive: float) -> Tensor:
    """f = log(1 + α/α₀) / log(1 + α_max/α₀): the drive's place in [0, α_max] on the
    log scale where A is smooth (0 at α = 0, 1 at α_max). Shape and dtype of ``drive``."""
    return torch.log1p(drive / drive_scale) / math.log1p(max_drive / drive_scale)


def drive_at_fraction(fraction: Tensor, drive_scale: float, max_drive: float) -> Tensor:
    """The drive α = α₀·(e^{f·log(1 + α_max/α₀)} − 1) at fractions f: inverse of
    :func:`drive_fraction`."""
    return drive_scale * torch.expm1(fraction * math.log1p(max_drive / drive_scale))


def _lobatto_points(n: int) -> Tensor:
    """x_k = cos(πk/(n − 1)), k = 0..n−1: Chebyshev–Lobatto points on [−1, 1], shape (n,)."""
    return torch.cos(math.pi * torch.arange(n, dtype=_DTYPE) / (n - 1))


def _chebyshev_coefficients(values: Tensor) -> Tensor:
    """c_j of f(x) = Σ_j c_j·T_j(x) interpolating values (n,) at the Lobatto points (DCT-I)."""
    n = values.numel()
    k = torch.arange(n, dtype=_DTYPE)
    weights = torch.ones(n, dtype=_DTYPE)
    weights[0] = weights[-1] = 0.5
    cosines = torch.cos(math.pi * k[:, None] * k[None, :] / (n - 1))
    coefficients = (2.0 / (n - 1)) * cosines @ (weights * values)
    coefficients[0] *= 0.5
    coefficients[-1] *= 0.5
    return coefficients


def chebyshev_series(coefficients: Tensor, x: Tensor) -> Tensor:
    """Σ_j c_j·T_j(x) by Clenshaw's recurrence; coefficients (n,), x (...) in [−1, 1] → (...)."""
    upper = torch.zeros_like(x)
    lower = torch.zeros_like(x)
    for c in coefficients.flip(0)[:-1]:
        upper, lower = 2.0 * x * upper - lower + c, upper
    return x * upper - lower + coefficients[0]


@dataclass(frozen=True)
class ActivityTable:
    """A(α) on [0, ``max_drive``] as a Chebyshev series in u = log(1 + α/``drive_scale``).

    ``coefficients`` (n,) float64 CPU; |series − exact| ≤ ``error_bound`` (measured, see
    the module doc). Call it on drives α (...) ≥ 0 of any float dtype and device.
    """

    coefficients: Tensor
    drive_scale: float
    max_drive: float
    error_bound: float

    def __call__(self, drive: Tensor) -> Tensor:
        """A(α) of drives (...) in [0, max_drive], differentiable, in the drives' dtype."""
        if not drive.is_floating_point():
            raise ValueError(f"drive must be a floating-point tensor, got {drive.dtype}")
        bad = ~torch.isfinite(drive) | (drive < 0) | (drive > self.max_drive)
        if bad.any():
            value = drive.detach()[bad].flatten()[0].item()
            raise ValueError(
                f"drive must lie in [0, {self.max_drive:.4g}] (the table's range), got {value!r}"
            )
        x = 2.0 * drive_fraction(drive, self.drive_scale, self.max_drive) - 1.0
        return chebyshev_series(self.coefficients.to(x), x)


def table_range(max_drive: float, lam: float) -> float:
    """The smallest range α₀·4^k (k ≥ 3) of :func:`activity_table` holding ``max_drive``."""
    scale = DRIVE_SCALE_PER_LAM * lam
    if not math.isfinite(max_drive) or max_drive < 0:
        raise ValueError(f"max_drive must be a finite number >= 0, got {max_drive!r}")
    for power in range(MIN_RANGE_POWER, MAX_RANGE_POWER + 1):
        if max_drive <= scale * RANGE_BASE**power:
            return scale * RANGE_BASE**power
    raise ValueError(
        f"max_drive must be <= {scale * RANGE_BASE**MAX_RANGE_POWER:.4g} "
        f"(α₀·{RANGE_BASE}^{MAX_RANGE_POWER} at lam={lam:g}), got {max_drive:.4g}: "
        "lower the couplings"
    )


def activity_table(
    n_time: int,
    time_extent: float,
    lam: float,
    n_kinks: int,
    max_drive: float,
    tolerance: float = TOLERANCE,
) -> ActivityTable:
    """The exact activity of one driven neuron of this lattice, tabulated on [0, α_max].

    α_max = :func:`table_range` (``max_drive``). Nodes are refined n → 2n − 1 from 65 until
    the measured error (see the module doc) is at most ``tolerance`` (at most 513 nodes,
    else ValueError). Cost: one transfer-matrix reference per node and check point (paper
    lattice: 81, about 25 s on one core), once: tables are cached in memory and on disk.
    """
    validate_lattice(n_time, time_extent, lam)
    validate_kinks(n_kinks)
    if n_kinks == 0:
        raise ValueError("n_kinks must be >= 2: the activity is normalised by the kinks, got 0")
    if not math.isfinite(tolerance) or tolerance <= 0:
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    top = table_range(max_drive, lam)
    return _build_table(n_time, float(time_extent), float(lam), n_kinks, top, float(tolerance))


@functools.lru_cache(maxsize=16)
def _build_table(
    n_time: int, time_extent: float, lam: float, n_kinks: int, top: float, tolerance: float
) -> ActivityTable:
    code = source_digest(sys.modules[__name__], exact, physics)
    key = [n_time, time_extent, lam, n_kinks, top, tolerance, code]

    def build() -> dict[str, object]:
        table = _tabulate(n_time, time_extent, lam, n_kinks, top, tolerance)
        return dataclasses.asdict(table)

    def sound(stored: dict[str, object]) -> bool:
        return bool(torch.isfinite(stored["coefficients"]).all())

    return ActivityTable(**load_or_build("activity_table", key, build, sound))


def _tabulate(
    n_time: int, time_extent: float, lam: float, n_kinks: int, top: float, tolerance: float
) -> ActivityTable:
    """Chebyshev series of A on [0, top]: nodes n = 65, 129, ... until the error, measured
    at 16 points halfway (in angle) between nodes, is at most ``tolerance``."""
    scale = DRIVE_SCALE_PER_LAM * lam

    def exact(x: Tensor) -> Tensor:
        drive = drive_at_fraction((x + 1.0) / 2.0, scale, top)
        return driven_activity(
            drive, n_time=n_time, time_extent=time_extent, lam=lam, n_kinks=n_kinks
        )

    values = exact(_lobatto_points(_FIRST_NODES))
    while True:
        n = values.numel()
        halfway = math.pi * (torch.arange(n - 1, dtype=_DTYPE) + 0.5) / (n - 1)
        checks = torch.cos(halfway[torch.linspace(0, n - 2, _CHECKS).round().long()])
        coefficients = _chebyshev_coefficients(values)
        error = (chebyshev_series(coefficients, checks) - exact(checks)).abs().max().item()
        if error <= tolerance:
            break
        if n >= _MAX_NODES:
            raise ValueError(
                f"tolerance={tolerance:g} is not reached with {n} nodes (error {error:.3g}): "
                "the activity is not smooth on this lattice"
            )
        new_values = exact(_lobatto_points(2 * n - 1)[1::2])
        values = torch.cat([torch.stack([values[:-1], new_values], 1).flatten(), values[-1:]])
    return ActivityTable(
        coefficients=coefficients, drive_scale=scale, max_drive=top, error_bound=error
    )
