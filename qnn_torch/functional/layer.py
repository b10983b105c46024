"""Pure functions of the quantum layer: weight transfer, drives and read-outs."""

from __future__ import annotations

import torch
from torch import Tensor

from qnn_torch.config import SamplerConfig, check_number
from qnn_torch.functional.observables import student_t_sigmas
from qnn_torch.functional.physics import real_tensor

READOUTS = ("activity", "softmax", "born")
BOUNDARY_EXPONENT = 0.25
"""Interim looks of :func:`contested` raise the bar by information^(−1/4)."""


def normalize_weights(weight: Tensor) -> Tensor:
    """Transfer of a classical weight to couplings in [0, 1] (the paper's ε̂).

    ε̂ = (W − min W) / max(W − min W), over the whole tensor. Shifting every weight by the
    same amount shifts every class score by (Σ_i x_i)·min W, the same for all classes, so
    the classical argmax is kept. A constant weight maps to zeros. ValueError for an empty
    or non-finite weight.
    """
    if weight.numel() == 0 or not torch.isfinite(weight).all():
        raise ValueError(
            f"weight must be non-empty and finite, got shape {tuple(weight.shape)} with "
            f"{int((~torch.isfinite(weight)).sum())} non-finite entries"
        )
    shifted = weight - weight.min()
    top = shifted.max()
    return shifted / top if top > 0 else torch.zeros_like(weight)


def checked_brightness(x: Tensor, in_features: int) -> Tensor:
    """Brightnesses (..., in_features) in [0, 1] as float32 (or float64 if given).

    ValueError naming the input for a non-tensor, a wrong last dimension, NaN or values
    outside [0, 1]; NotRealError for complex, bool or meta tensors (refused, not cast).
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"input must be a tensor, got {type(x).__name__}")
    real_tensor("input", x)
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"input must have last dimension in_features={in_features}, got shape {tuple(x.shape)}"
        )
    x = x.to(x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32)
    if torch.isnan(x).any():
        raise ValueError("input contains NaN: brightnesses must lie in [0, 1]")
    if ((x < 0) | (x > 1)).any():
        raise ValueError(
            f"input brightnesses must lie in [0, 1], got min {x.min().item():.4g} "
            f"and max {x.max().item():.4g}"
        )
    return x


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


def contested(
    chain_activity: Tensor,
    stderr: Tensor,
    sigmas: float,
    valid: Tensor | None = None,
    drive: Tensor | None = None,
    information: float = 1.0,
) -> Tensor:
    """The outputs of each row that may still be its top, (B, O) bool.

    With A_c the activities measured by chain c of C independent chains (``chain_activity``
    (B, C, O)) and top the output of the largest chain mean, output j is decided against
    once its chain-by-chain margin D_c = A_c,top − A_c,j has mean(D) ≥ t·std(D)/√C, where t
    is the Student-t margin with C − 1 degrees of freedom whose one-sided tail is that of
    ``sigmas`` Gaussian standard errors (:func:`~qnn_torch.functional.observables.
    student_t_sigmas`: 3σ is t = 4.5 with 8 chains, 9.2 with 4), raised at an interim look
    to t·``information``^(−1/4), where ``information`` in (0, 1] is the share of the
    planned sweeps measured so far (a Wang–Tsiatis boundary, Δ = 1/4, between Pocock's
    flat bar and O'Brien–Fleming's information^(−1/2): each look is a chance of a false
    lead, and the early ones, where a near tie's true gap is the smallest fraction of the
    error, decide for the wrong output almost as often as for the right one). The error of
    the margin comes from the C chains themselves, so it holds whatever the dependence
    between the outputs of a chain (common random numbers of independent
    neurons make it small for close outputs; lateral inhibition anti-correlates them).
    Outputs whose chains equal the top's to the last bit (identical drives under common
    random numbers) are a tie that no sweep can break: they count as the top, not as
    contenders. Given the outputs' ``drive`` (B, O), only equal drives tie: chains of
    different drives that are still equal (from the same start, under common random
    numbers) will part, and stay contested until they do.

    Contested: the top, and every other output not decided against, or with an infinite
    error in ``stderr`` (B, O) (stuck chains decide nothing; a stuck top keeps every
    output contested). ``valid`` (B, O) bool, if given, leaves out padding slots (never
    contested, never the top; each row needs one valid output).
    """
    if not 0 < information <= 1:
        raise ValueError(f"information must be in (0, 1], got {information!r}")
    chains = chain_activity.shape[1]
    if valid is None:
        valid = torch.ones_like(stderr, dtype=torch.bool)
    mean = chain_activity.mean(1).masked_fill(~valid, -torch.inf)
    top = mean.argmax(-1, keepdim=True)  # (B, 1)
    top_chains = chain_activity.gather(-1, top[:, None, :].expand(-1, chains, -1))  # (B, C, 1)
    margin = top_chains - chain_activity  # (B, C, O)
    tied = (margin == 0).all(1)
    if drive is not None:
        tied &= drive == drive.gather(-1, top)
    lead = margin.mean(1)
    t_sigmas = student_t_sigmas(sigmas, chains) * information**-BOUNDARY_EXPONENT
    ahead = (lead > 0) & (lead >= t_sigmas * margin.std(1) / chains**0.5)
    trusted = stderr.isfinite() & stderr.gather(-1, top).isfinite()
    is_top = torch.zeros_like(valid).scatter_(-1, top, True)
    return is_top | (valid & ~tied & ~(ahead & trusted))


def decided(chain_activity: Tensor, stderr: Tensor, sigmas: float) -> Tensor:
    """Whether each row's top output is ahead of every other by ``sigmas`` standard errors
    of their chain-by-chain margin: only the top is :func:`contested`. Returns bool (B,)."""
    return contested(chain_activity, stderr, sigmas).sum(-1) == 1


def checked_sigmas(sigmas: object) -> float:
    """A decision margin as a float; ValueError unless a finite number >= 0."""
    return check_number("decision_sigmas", sigmas)


def check_decision(
    sigmas: float, outputs: int, config: SamplerConfig, *, gradients: bool = False
) -> None:
    """ValueError unless decision mode with margin ``sigmas`` (0: off) can run: at least 2
    outputs, room to measure more (``config.max_sweeps`` > ``sweeps``) and, because its
    data-dependent stopping would bias them, no ``gradients``."""
    if sigmas <= 0:
        return
    if config.max_sweeps <= config.sweeps or outputs < 2:
        raise ValueError(
            f"decision_sigmas={sigmas:g} needs at least 2 outputs and "
            f"config.max_sweeps > config.sweeps (blocks of sweeps up to a cap), got "
            f"{outputs} outputs, max_sweeps={config.max_sweeps}, sweeps={config.sweeps}"
        )
    if gradients:
        raise ValueError(
            f"decision_sigmas={sigmas:g} is for evaluation: its data-dependent stopping would "
            "bias the gradients; set it to 0 to train (or run under torch.no_grad())"
        )
