"""Pure functions of the quantum layer: weight transfer, drives and read-outs."""

from __future__ import annotations

import torch
from torch import Tensor

READOUTS = ("activity", "softmax", "born")


def normalize_weights(weight: Tensor) -> Tensor:
    """Transfer of a classical weight to couplings in [0, 1] (the paper's ε̂).

    ε̂ = (W − min W) / max(W − min W), over the whole tensor. Shifting every weight by the
    same amount shifts every class score by (Σ_i x_i)·min W, the same for all classes, so
    the classical argmax is kept. A constant weight maps to zeros.
    """
    shifted = weight - weight.min()
    top = shifted.max()
    return shifted / top if top > 0 else torch.zeros_like(weight)


def output_drives(brightness: Tensor, weight: Tensor, coupling_scale: float | Tensor) -> Tensor:
    """Drive amplitude of each output: α_j = k·Σ_i ε̂_ji·b_i.

    All inputs share one kink path, so output j feels a·α_j·(ψ_t² − 1)²·φ_j², and the
    784 fixed input neurons reduce to this matrix product. Shapes: brightness (..., I),
    weight (O, I) → (..., O).
    """
    return coupling_scale * torch.matmul(brightness, weight.t())


def readout(activity: Tensor, kind: str) -> Tensor:
    """Scores from activities (..., O): raw, softmax (the paper's) or Born a_j²/Σ_k a_k².

    Born scores are undefined for a row of zero activities: ValueError then.
    """
    if kind == "activity":
        return activity
    if kind == "softmax":
        return torch.softmax(activity, dim=-1)
    if kind == "born":
        squared = activity * activity
        total = squared.sum(-1, keepdim=True)
        if bool(total.eq(0).any()):
            row = tuple(total.eq(0).nonzero()[0, :-1].tolist())
            raise ValueError(
                f"readout 'born' needs a non-zero activity in every row, got all zeros in "
                f"row {row} (a_j²/Σ_k a_k² is 0/0)"
            )
        return squared / total
    raise ValueError(f"readout must be one of {READOUTS}, got {kind!r}")


def decided(chain_activity: Tensor, stderr: Tensor, sigmas: float) -> Tensor:
    """Whether each row's top output is ahead of the runner-up by ``sigmas`` standard errors.

    With A_c the activities measured by chain c of C independent chains (``chain_activity``
    (B, C, O), O ≥ 2), top the output of the largest chain mean and second the best of the
    others, the margin of chain c is D_c = A_c,top − A_c,second, and a row is decided when
    mean(D) ≥ sigmas·std(D)/√C. The error of the margin comes from the chains themselves,
    so it holds whatever the dependence between the outputs of a chain (common random
    numbers of independent neurons make it small for close outputs; lateral inhibition
    anti-correlates them). Outputs whose chains equal the top's to the last bit (identical
    drives under common random numbers) are a tie that no sweep can break: they count as
    the top, and the runner-up is the best output outside them (none left: decided).
    ``stderr`` (B, O) vetoes: an infinite error (stuck chains) never decides. With few
    chains the error is itself noisy (C − 1 degrees of freedom): use a few more sigmas than
    a Gaussian would need. Returns bool (B,).
    """
    chains = chain_activity.shape[1]
    mean = chain_activity.mean(1)
    top = mean.argmax(-1, keepdim=True)  # (B, 1)
    top_chains = chain_activity.gather(-1, top[:, None, :].expand(-1, chains, -1))  # (B, C, 1)
    tied = (chain_activity == top_chains).all(1)  # (B, O), the top included
    second = mean.masked_fill(tied, -torch.inf).argmax(-1, keepdim=True)
    second_chains = chain_activity.gather(-1, second[:, None, :].expand(-1, chains, -1))
    margin = (top_chains - second_chains)[..., 0]  # (B, C)
    alone = tied.all(-1)  # every output tied with the top
    finite = stderr.gather(-1, top).isfinite()[:, 0] & (
        alone | stderr.gather(-1, second).isfinite()[:, 0]
    )
    error = margin.std(1) / chains**0.5
    return finite & (alone | (margin.mean(1) >= sigmas * error))
