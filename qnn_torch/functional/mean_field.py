"""Time-resolved mean field of a quantum MLP: exact single neurons in their neighbours'
average fields, solved self-consistently.

Each neuron n of layer l is treated exactly (transfer matrix,
:func:`~qnn_torch.functional.exact.neuron_moments`) in the fields of its neighbours'
*expected* paths, slice by slice (w = (φ² − 1)², x = φ², q = (φ² − 1)⁴, ⟨·⟩ per slice):

    drive        h_{n,t} = α_n·g_t + Σ_{m ∈ l−1} ε_mn·⟨w_{m,t}⟩
    inhibition   H_{n,t} = β_n·g_t² + Σ_{m ∈ l±1} η_mn·⟨q_{m,t}⟩
    deepening    K_{n,t} = Σ_{j ∈ l+1} ε_nj·⟨x_{j,t}⟩

(α, β the input fields of layer 1, g_t the input spike profile; couplings as in
:mod:`qnn_torch.functional.mlp`). The deepening is the back-reaction of the links a neuron
sends: where its targets sit in a well (x ≈ 1) its Λ/4 grows by Σ_j ε_nj. Layers are
updated in turn (Gauss–Seidel) from neurons at rest (w = q = 0, x = 1) until no activity
moves by more than ``tolerance``. Only correlations between neighbours' fluctuations are
left out; the time profiles are kept, which matters: all neurons spike near the input's
kinks, so a target's ⟨x_t⟩ dips exactly where its source spikes. On the paper's lattice
(docs/deep_networks.md) this reproduces the Monte Carlo of driven chains within 6 %, and
of a net of many weak links within its errors, where mean fields of time averages are
10–16 % off on the hidden neurons.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from qnn_torch.config import check_int
from qnn_torch.functional.exact import neuron_moments
from qnn_torch.functional.physics import input_spike

_DTYPE = torch.float64


class MeanFieldWarning(RuntimeWarning):
    """The mean-field iteration stopped before its activities settled."""


@dataclass(frozen=True)
class MeanFieldResult:
    """Activities of each simulated layer, (B, n_l) float64 CPU, the sweeps over the layers
    that were made, and the largest change of an activity in the last one."""

    activities: tuple[Tensor, ...]
    iterations: int
    change: float


def mean_field_activities(
    brightness: Tensor,
    excite: Sequence[Tensor],
    inhibit: Sequence[Tensor] | None,
    coupling_scale: float,
    inhibition_scale: float,
    *,
    n_time: int,
    time_extent: float,
    lam: float,
    n_kinks: int,
    iterations: int = 30,
    tolerance: float = 1e-4,
) -> MeanFieldResult:
    """Self-consistent mean-field activities of a quantum MLP (formulas in the module doc).

    brightness (B, I); excite[l − 1], inhibit[l − 1] (n_l, n_{l−1}) the couplings ε̂, η̂ ≥ 0
    (inhibit None for none), scaled by ``coupling_scale`` and ``inhibition_scale``.
    Cost per iteration: one transfer-matrix profile per neuron and input (paper lattice
    ~0.1–0.3 s each, float64 CPU). Warns :class:`MeanFieldWarning` when ``iterations``
    sweeps leave a change above ``tolerance``.
    """
    check_int("iterations", iterations, 1)
    if not math.isfinite(tolerance) or tolerance <= 0:
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    profile, norm = input_spike(n_time, time_extent, lam, n_kinks)
    b = brightness.detach().to(device="cpu", dtype=_DTYPE)
    eps = [coupling_scale * w.detach().to("cpu", _DTYPE) for w in excite]
    eta = (
        None
        if inhibit is None
        else [inhibition_scale * w.detach().to("cpu", _DTYPE) for w in inhibit]
    )
    batch, layers = b.shape[0], len(eps)
    sizes = [w.shape[0] for w in eps]
    w = [torch.zeros(batch, n, n_time, dtype=_DTYPE) for n in sizes]
    x = [torch.ones(batch, n, n_time, dtype=_DTYPE) for n in sizes]
    q = [torch.zeros(batch, n, n_time, dtype=_DTYPE) for n in sizes]
    activity = [torch.zeros(batch, n, dtype=_DTYPE) for n in sizes]
    change = float("inf")
    done = 0
    while done < iterations and change > tolerance:
        change = 0.0
        for l in range(layers):
            if l == 0:
                drive = (b @ eps[0].t())[..., None] * profile
                inhibition = None if eta is None else ((b * b) @ eta[0].t())[..., None] * profile**2
            else:
                drive = torch.einsum("bmt,nm->bnt", w[l - 1], eps[l])
                inhibition = None if eta is None else torch.einsum("bmt,nm->bnt", q[l - 1], eta[l])
            if eta is not None and l + 1 < layers:
                inhibition = inhibition + torch.einsum("bjt,jn->bnt", q[l + 1], eta[l + 1])
            deepening = (
                torch.einsum("bjt,jn->bnt", x[l + 1], eps[l + 1]) if l + 1 < layers else None
            )
            v0, x[l], q[l] = neuron_moments(
                drive, inhibition, deepening, time_extent=time_extent, lam=lam
            )
            w[l] = v0 / (0.25 * lam)
            new = v0.sum(-1) / norm
            change = max(change, (new - activity[l]).abs().max().item())
            activity[l] = new
        done += 1
    if change > tolerance:
        warnings.warn(
            f"mean field not settled after {done} iterations: activities still move by "
            f"{change:.3g} > tolerance {tolerance:g}",
            MeanFieldWarning,
            stacklevel=2,
        )
    return MeanFieldResult(tuple(activity), done, change)
