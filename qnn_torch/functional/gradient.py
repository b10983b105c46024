"""Gradients of Monte Carlo activities: ∂A/∂θ = −Cov(O, ∂S/∂θ) (pure tensor functions).

An activity A_n = ⟨O_n⟩ is an expectation under e^{−S(θ)}/Z of an observable
O_n = Σ_t V0(φ_{n,t}) / Σ_t V0(ψ_t) that does not depend on the parameters θ, so

    ∂A_n/∂θ = −⟨O_n·∂S/∂θ⟩ + ⟨O_n⟩·⟨∂S/∂θ⟩ = −Cov(O_n, ∂S/∂θ).

The derivatives of the lattice action (module doc of :mod:`qnn_torch.functional.physics`)
with respect to the parameters of a compiled network are, per row (R rows, N neurons,
Nt slices, spacing a, spike profile g_t, x = φ², w = (φ² − 1)²):

    drive α_n:             ∂S/∂α_n   = a·Σ_t g_t·x_{n,t}
    input_inhibition β_n:  ∂S/∂β_n   = a·Σ_t g_t²·w_{n,t}²
    excite ε[i, j]:        ∂S/∂ε_ij  = a·Σ_t w_{i,t}·x_{j,t}
    inhibit η[i, j]:       ∂S/∂η_ij  = a/2·Σ_t w_{i,t}²·w_{j,t}²   (the matrix is symmetric
                           and each pair enters S once, as ½·Σ_{i≠j})

(derivatives of :func:`~qnn_torch.functional.physics.network_action` entry by entry; the
diagonals of excite and inhibit are never links)
so one simulation gives the Jacobian of every activity with respect to every parameter.
:class:`CovarianceSums` accumulates the per-row sums of O, ∂S/∂θ and O·∂S/∂θ over the
measurement sweeps (memory independent of their number), and :func:`jackknife_covariance`
turns them into an unbiased covariance with a standard error from independent chains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

PARAMETERS = ("drive", "input_inhibition", "excite", "inhibit")
"""Parameter families of a compiled network that activities can be differentiated by."""


def action_derivatives(
    phi: Tensor, profile: Tensor, spacing: float, families: tuple[str, ...]
) -> dict[str, Tensor]:
    """∂S/∂θ of every row for the parameter ``families`` (formulas in the module doc).

    Shapes: phi (R, N, Nt), profile (Nt,). Returns float64 tensors: drive and
    input_inhibition (R, N); excite and inhibit (R, N, N) indexed [i, j] like the
    parameter matrices.
    """
    unknown = set(families) - set(PARAMETERS)
    if unknown:
        raise ValueError(f"families must be among {PARAMETERS}, got {sorted(unknown)}")
    x = (phi * phi).double()
    w = (x - 1.0).square_()
    g = profile.to(x)
    out: dict[str, Tensor] = {}
    if "drive" in families:
        out["drive"] = spacing * torch.matmul(x, g)
    if "input_inhibition" in families:
        out["input_inhibition"] = spacing * torch.matmul(w * w, g * g)
    if "excite" in families:
        out["excite"] = spacing * torch.matmul(w, x.transpose(1, 2))
    if "inhibit" in families:
        w2 = w * w
        out["inhibit"] = (0.5 * spacing) * torch.matmul(w2, w2.transpose(1, 2))
    return out


@dataclass
class CovarianceSums:
    """Per-row sums over measurement sweeps of O, ∂S/∂θ and O·∂S/∂θ, for one family.

    Shapes (R rows, N neurons, P parameters per row): derivative (R, P) and product
    (R, N, P); with ``diagonal`` (independent neurons, P = N) product is (R, N). For
    independent neurons ∂A_n/∂θ_m = 0 exactly for m ≠ n, and only the diagonal is
    accumulated. That is also required: their chains share random numbers (see
    :mod:`qnn_torch.functional.sampler`), so the sampled O_n and ∂S/∂θ_m are correlated
    and an off-diagonal covariance would be a bias, not an estimate of 0. The sums
    of O themselves are the sampler's activity sums. float64.
    """

    derivative: Tensor
    product: Tensor
    diagonal: bool

    @classmethod
    def zeros(
        cls, rows: int, neurons: int, parameters: int, *, diagonal: bool, device: torch.device
    ) -> CovarianceSums:
        """Empty sums for ``rows`` × ``neurons`` observables and ``parameters`` per row."""
        if diagonal and parameters != neurons:
            raise ValueError(
                f"a diagonal Jacobian needs one parameter per neuron, got {parameters} "
                f"parameters for {neurons} neurons"
            )
        options = {"dtype": torch.float64, "device": device}
        product = (rows, neurons) if diagonal else (rows, neurons, parameters)
        return cls(
            torch.zeros(rows, parameters, **options),
            torch.zeros(product, **options),
            diagonal,
        )

    def add(self, start: int, stop: int, observable: Tensor, derivative: Tensor) -> None:
        """Add one sweep of rows [start, stop): observable (r, N), derivative (r, P)."""
        self.derivative[start:stop] += derivative
        if self.diagonal:
            self.product[start:stop] += observable * derivative
        else:
            self.product[start:stop].baddbmm_(observable[:, :, None], derivative[:, None, :])


def jackknife_covariance(
    observable_sums: Tensor, sums: CovarianceSums, sweeps: int, chains: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Cov(O_n, ∂S/∂θ_p) from the sums of independent chains, with its standard error.

    Rows are (network, chain) pairs, chains fastest: observable_sums (Bf·C, N). With m the
    per-chain means over ``sweeps``, the estimate

        Cov = mean_c m_OD,c − Σ_{c≠c'} m_O,c·m_D,c' / (C·(C − 1))

    pairs only means of different chains, so it is unbiased for equilibrated chains
    whatever their autocorrelation (it is the jackknife bias correction of the pooled
    covariance). The standard error is the jackknife over chains. The leave-one-out
    (pooled) estimates are returned too, so that any linear function of the Jacobian, such
    as a backward pass, gets its own jackknife error.

    Returns (covariance, stderr, leave_one_out): shapes (Bf, N, P) and (C, Bf, N, P), or
    (Bf, N) and (C, Bf, N) for a diagonal family.
    """
    if chains < 2:
        raise ValueError(f"chains must be >= 2 for a covariance with an error, got {chains}")

    def outer(o: Tensor, d: Tensor) -> Tensor:
        return o * d if sums.diagonal else o[..., :, None] * d[..., None, :]

    m_o = (observable_sums / sweeps).unflatten(0, (-1, chains))  # (Bf, C, N)
    m_d = (sums.derivative / sweeps).unflatten(0, (-1, chains))  # (Bf, C, P)
    m_od = (sums.product / sweeps).unflatten(0, (-1, chains))  # (Bf, C, N[, P])
    total_o, total_d = m_o.sum(1), m_d.sum(1)
    cross = outer(total_o, total_d) - outer(m_o, m_d).sum(1)  # Σ_{c≠c'} m_O,c·m_D,c'
    covariance = m_od.mean(1) - cross / (chains * (chains - 1))
    rest = chains - 1  # leave chain c out: the pooled covariance of the other chains
    loo = (m_od.sum(1, keepdim=True) - m_od) / rest - outer(
        (total_o[:, None] - m_o) / rest, (total_d[:, None] - m_d) / rest
    )
    stderr = ((rest / chains) * (loo - loo.mean(1, keepdim=True)).square().sum(1)).sqrt()
    return covariance, stderr, loo.movedim(1, 0)
