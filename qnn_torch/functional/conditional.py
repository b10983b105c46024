"""Exact conditional expectations of neurons given their neighbours' paths (Rao–Blackwell).

The neurons of one colour of a network share no link, so given the paths of every other
neuron they are independent single neurons, each in the frozen fields of
:func:`~qnn_torch.functional.sampler.neuron_fields`:

    U_t(φ) = K_t·(φ² − 1)² + A_t·φ² + C_t·(φ² − 1)⁴,

K_t = Λ/4 + Σ_j ε_nj·φ_{j,t}² (its own well, deepened by its outgoing excitations), A_t its
drive (inputs and incoming excitations) and C_t its inhibition. Their activity's
conditional expectation E[Σ_t V0(φ_t) | neighbours] is then a one-neuron transfer-matrix
product, computed here on the device. Replacing the sampled Σ_t V0(φ_t) by it keeps the
mean and removes the neuron's own quantum fluctuation from the variance (Rao–Blackwell):
for the outputs of a quantum MLP that is most of it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qnn_torch.functional.exact import _grid, _kinetic_kernel, _parity_bases
from qnn_torch.functional.physics import double_well

CONDITIONAL_ALIAS_EXPONENT = 12.0
"""The φ grid's aliasing bound exp(−12) (the exact references use exp(−30)), on grids of
about two thirds the points: measured within 1e−7 relative of the references on the MLP
lattice and 5e−5 on a coarser one (Λ = 60, a = 1/16), far below any Monte Carlo error."""


def conditional_well_sum(
    drive: Tensor,
    *,
    deepening: Tensor | float,
    inhibition: Tensor | None,
    spacing: float,
    lam: float,
) -> Tensor:
    """E[Σ_t V0(φ_t)] of independent neurons in frozen fields, exactly (module doc).

    drive A (R, n, Nt), deepening K (R, n, Nt) or the float Λ/4, inhibition C (R, n, Nt) or
    None, as :func:`~qnn_torch.functional.sampler.neuron_fields` returns them. On a φ grid
    of M points (from the largest fields and :data:`CONDITIONAL_ALIAS_EXPONENT`), with the
    transfer matrices T_t = diag(exp(−a·U_t))·G (G the kinetic kernel), Z = Tr T_0⋯T_{Nt−1}
    and

        Σ_t ⟨V0(φ_t)⟩ = Tr R_Nt / Tr Q_Nt,   Q_{t+1} = Q_t·T_t,
        R_{t+1} = (R_t + Q_t·diag(V0))·T_t,   Q_0 = 1, R_0 = 0,

    both rescaled by max Q_t at each step, in the even and odd parity sectors apart (U_t is
    even in φ; Tr = Tr₊ + Tr₋). Returns (R, n) in the dtype and on the device of ``drive``;
    cost Nt·M³ flops per neuron (M ≈ 30–60).
    """
    if drive.ndim != 3 or drive.shape[-1] == 0:
        raise ValueError(f"drive must have shape (R, n, Nt) with Nt >= 1, got {tuple(drive.shape)}")
    rows, neurons, n_time = drive.shape
    quarter = 0.25 * lam
    excess = None if not isinstance(deepening, Tensor) else deepening - quarter
    extra = (
        0.0 if excess is None else 4.0 * max(float(excess.max()), 0.0),
        max(float(drive.max()), 0.0),
        0.0 if inhibition is None else max(float(inhibition.max()), 0.0),
    )
    grid = _grid(n_time, spacing, lam, extra, 0, 0.0, alias_exponent=CONDITIONAL_ALIAS_EXPONENT)
    # Entries below ∛tiny (2e−13 in float32) are zeroed, far below the rounding of the
    # largest (1), so that no product of three factors underflows: subnormal numbers would
    # slow the products tenfold.
    negligible = torch.finfo(drive.dtype).tiny ** (1 / 3)
    phi = grid.to(drive)
    x = phi * phi
    w = (x - 1.0) ** 2
    well = double_well(phi, lam)
    potential = drive[..., None] * x + (quarter if excess is None else deepening[..., None]) * w
    if inhibition is not None:
        potential = potential + inhibition[..., None] * (w * w)
    potential = potential.reshape(rows * neurons, n_time, -1)
    potential = potential - potential.amin(-1, keepdim=True)
    weights = torch.exp(-spacing * potential)  # (R·n, Nt, M), largest 1
    weights.masked_fill_(weights < negligible, 0.0)
    kernel = _kinetic_kernel(grid, spacing)
    sectors = []
    for basis, index in _parity_bases(grid.numel()):
        sector = (basis.T @ kernel @ basis).to(drive)
        sector.masked_fill_(sector.abs() < negligible * sector.abs().max(), 0.0)
        sectors.append(_traced_products(weights[..., index.to(drive.device)], sector, well[index]))
    q, r, log_scale = (torch.stack(parts) for parts in zip(*sectors, strict=True))
    relative = torch.exp(log_scale - log_scale.amax(0))
    return ((r * relative).sum(0) / (q * relative).sum(0)).reshape(rows, neurons)


def _traced_products(
    weights: Tensor, kernel: Tensor, well: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Tr Q_Nt and Tr R_Nt of :func:`conditional_well_sum` in one parity sector, divided by
    exp(log_scale): weights (B, Nt, m) at the sector's grid points, its kernel (m, m) and
    V0 there (m,). Returns three (B,) tensors."""
    m = kernel.shape[0]
    eye = torch.eye(m, dtype=kernel.dtype, device=kernel.device)
    # Rows 0..m−1 hold Q_t, rows m..2m−1 hold R_t + Q_t·diag(V0). With T_t = diag(W_t)·G,
    # one product (stacked·diag(W_t))·G advances both: a single (B·2m, m) × (m, m) GEMM.
    stacked = torch.cat([eye, torch.diag(well)]).repeat(weights.shape[0], 1, 1)
    log_scale = torch.zeros(weights.shape[0], dtype=kernel.dtype, device=kernel.device)
    negligible = torch.finfo(kernel.dtype).tiny ** (1 / 3)
    n_time = weights.shape[1]
    for t in range(n_time):
        advanced = (stacked * weights[:, t, None, :]) @ kernel
        scale = advanced[:, :m].abs().amax(dim=(-2, -1))
        advanced /= scale[:, None, None]
        log_scale += scale.log()
        advanced.masked_fill_(advanced.abs() < negligible, 0.0)
        if t < n_time - 1:
            stacked = torch.cat([advanced[:, :m], advanced[:, m:] + advanced[:, :m] * well], -2)
    q, r = advanced.split(m, dim=-2)
    return q.diagonal(dim1=-2, dim2=-1).sum(-1), r.diagonal(dim1=-2, dim2=-1).sum(-1), log_scale
