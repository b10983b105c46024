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
    (B, C, O), O ≥ 2) and top, second the two largest chain means, the margin of chain c is
    D_c = A_c,top − A_c,second, and a row is decided when mean(D) ≥ sigmas·std(D)/√C. The
    error of the margin comes from the chains themselves, so it holds whatever the
    dependence between the outputs of a chain (common random numbers of independent
    neurons make it small for close outputs; lateral inhibition anti-correlates them).
    ``stderr`` (B, O) vetoes: an infinite error (stuck chains) never decides. Two
    outputs whose chains agree to the last bit (identical drives under common random
    numbers) are a tie that more sweeps cannot break: decided. With few chains the error
    is itself noisy (C − 1 degrees of freedom): use a few more sigmas than a Gaussian
    would need. Returns bool (B,).
    """
    chains = chain_activity.shape[1]
    index = chain_activity.mean(1).topk(2, dim=-1).indices  # (B, 2)
    pair = chain_activity.gather(-1, index[:, None, :].expand(-1, chains, -1))
    margin = pair[..., 0] - pair[..., 1]  # (B, C)
    finite = stderr.gather(-1, index).isfinite().all(-1)
    error = margin.std(1) / chains**0.5
    return finite & (margin.mean(1) >= sigmas * error)
