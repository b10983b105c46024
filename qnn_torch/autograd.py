"""Autograd for sampled activities: backward passes use the covariance Jacobian.

The sampler measures ∂A/∂θ = −Cov(O, ∂S/∂θ) while it measures A
(:mod:`qnn_torch.functional.gradient`); :func:`attach_jacobian` returns the activities as
a tensor whose ``grad_fn`` contracts that Jacobian with the incoming gradient, so that
``backward()`` reaches strengths, brightnesses, a layer's weight and its input through
ordinary autograd. :func:`grad_with_stderr` gives any such gradient with a jackknife
standard error over the independent chains, +inf where that error cannot be trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from qnn_torch.functional.gradient import CovarianceSums, jackknife_covariance


@dataclass(frozen=True)
class Jacobian:
    """∂A_n/∂θ_p of one parameter family, from C independent chains.

    Shapes: value and stderr (Bf, N, P), replicates (C, Bf, N, P) (leave-one-chain-out
    estimates); (Bf, N) and (C, Bf, N) when ``diagonal`` (independent neurons, θ_n acts on
    neuron n only). N counts the activities differentiated. ``entries`` (P,), if given,
    are the flat indices into the family's parameter (per network) of the P measured
    parameters; the others get no gradient. None: P is the whole parameter.
    """

    value: Tensor
    stderr: Tensor
    replicates: Tensor
    diagonal: bool
    entries: Tensor | None = None

    @classmethod
    def from_sums(
        cls,
        observable_sums: Tensor,
        sums: CovarianceSums,
        sweeps: int,
        chains: int,
        entries: Tensor | None = None,
    ) -> Jacobian:
        covariance, stderr, leave_one_out = jackknife_covariance(
            observable_sums, sums, sweeps, chains
        )
        return cls(-covariance, stderr, -leave_one_out, sums.diagonal, entries)


class _Jackknife:
    """What backward passes use in place of each Jacobian (set by grad_with_stderr).

    ``replicate``: the full estimate (None), leave-chain-c-out (c), or a probe: random
    values on the entries with a non-finite stderr ("untrusted") or on every entry ("all"),
    drawn from ``generator``, so that a gradient entry is non-zero only where such
    Jacobian entries reach it.
    """

    replicate: int | str | None = None
    generator: torch.Generator | None = None
    chains_seen: set[int] = set()  # noqa: RUF012 (reset by grad_with_stderr)


_SELECTION = _Jackknife()


class _SampledActivity(torch.autograd.Function):
    """Activities (Bf, N) as a differentiable function of the compiled parameters."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        activity: Tensor,
        jacobians: dict[str, Jacobian],
        names: tuple[str, ...],
        what: str,
        *parameters: Tensor,
    ) -> Tensor:
        ctx.jacobians = jacobians
        ctx.names = names
        ctx.what = what
        ctx.shapes = [(p.shape, p.dtype) for p in parameters]
        return activity.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple:
        replicate = _SELECTION.replicate
        grads = []
        for (family, jacobian), (shape, dtype) in zip(
            ctx.jacobians.items(), ctx.shapes, strict=True
        ):
            _SELECTION.chains_seen.add(jacobian.replicates.shape[0])
            matrix = _selected(jacobian, replicate)
            incoming = grad.to(matrix)
            if jacobian.diagonal:
                result = incoming * matrix
            else:
                result = torch.einsum("bn,bnp->bp", incoming, matrix)
            if not torch.isfinite(result).all():
                raise FloatingPointError(_non_finite_message(ctx, family, result, grad, jacobian))
            if jacobian.entries is not None:
                measured = result
                result = measured.new_zeros(measured.shape[0], shape[1:].numel())
                result[:, jacobian.entries] = measured
            grads.append(result.reshape(shape).to(dtype))
        return (None, None, None, None, *grads)


def _selected(jacobian: Jacobian, replicate: int | str | None) -> Tensor:
    """The matrix a backward pass uses for ``jacobian`` (see :class:`_Jackknife`)."""
    if replicate is None:
        return jacobian.value
    if isinstance(replicate, str):
        noise = torch.randn(
            jacobian.value.shape, generator=_SELECTION.generator, dtype=torch.float64
        ).to(jacobian.value)
        if replicate == "untrusted":
            return torch.where(torch.isfinite(jacobian.stderr), 0.0, noise)
        return noise
    if replicate < jacobian.replicates.shape[0]:
        return jacobian.replicates[replicate]
    raise ValueError(
        f"jackknife replicate {replicate} does not exist: the sampled activities "
        f"have {jacobian.replicates.shape[0]} chains"
    )


def _non_finite_message(ctx, family: str, result: Tensor, grad: Tensor, jacobian: Jacobian) -> str:
    index = tuple(int(i) for i in (~torch.isfinite(result)).nonzero()[0][1:])
    if family in ("excite", "inhibit"):
        entry = index[0] if jacobian.entries is None else int(jacobian.entries[index[0]])
        i, j = divmod(entry, len(ctx.names))
        where = f"the {family} link {ctx.names[i]!r} – {ctx.names[j]!r}"
    else:
        where = f"the {family} of neuron {ctx.names[index[0]]!r}"
    cause = (
        "the incoming gradient is not finite"
        if not torch.isfinite(grad).all()
        else "the measured covariance is not finite"
    )
    return f"non-finite gradient with respect to {where} ({ctx.what}): {cause}"


def attach_jacobian(
    activity: Tensor,
    jacobians: dict[str, Jacobian],
    parameters: dict[str, Tensor],
    *,
    names: Sequence[str],
    what: str,
) -> Tensor:
    """``activity`` (Bf, N) with a ``grad_fn`` that applies ``jacobians`` to ``parameters``
    (N: the activities the Jacobians differentiate).

    ``parameters`` maps each family of ``jacobians`` to the tensor it differentiates by:
    (Bf, N) for drive and input_inhibition, (Bf, N, N) for excite and inhibit. ``names``
    (the neurons, in order) and ``what`` label the error raised when a gradient is not
    finite. Without Jacobians the activity is returned as it is.
    """
    if not jacobians:
        return activity
    tensors = [parameters[family] for family in jacobians]
    return _SampledActivity.apply(activity, jacobians, tuple(names), what, *tensors)


def grad_with_stderr(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Tensor | Sequence[Tensor] | None = None,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Gradients like :func:`torch.autograd.grad`, each with a standard error.

    Runs the backward pass once with the full Jacobian estimates of every sampled activity
    in the graph, then once per chain c with the estimates that leave chain c out; the
    spread of these gives the jackknife error √((C−1)/C·Σ_c (g_{−c} − ḡ)²). All sampled
    activities in the graph must come from the same number of chains C. The error covers
    the Monte Carlo noise of the Jacobians, for the given incoming gradients. It is +inf
    where a Jacobian entry with a non-finite stderr (a stuck network) reaches the gradient,
    and where the replicates agree exactly although some Jacobian entry reaches it; a
    gradient entry that no Jacobian entry reaches is exact (error 0). Two more backward
    passes, with random probes in place of the Jacobians, find which entries reach which.
    Not thread-safe: run one at a time.
    """
    _SELECTION.chains_seen = set()
    _SELECTION.replicate = None
    full = torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True)
    chains = _SELECTION.chains_seen
    if len(chains) != 1:
        raise ValueError(
            "grad_with_stderr needs sampled activities with one number of chains between "
            f"outputs and inputs, found chain counts {sorted(chains) or 'none'}"
        )
    count = chains.pop()
    passes = []
    try:
        _SELECTION.generator = torch.Generator().manual_seed(0)
        for selection in (*range(count), "untrusted", "all"):
            _SELECTION.replicate = selection
            passes.append(torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True))
    finally:
        _SELECTION.replicate = None
        _SELECTION.generator = None
    *replicates, untrusted, reached = passes
    stderr = []
    for k in range(len(full)):
        stack = torch.stack([r[k] for r in replicates])
        spread = (stack - stack.mean(0)).square().sum(0)
        agreeing = (stack == stack[:1]).all(0) & reached[k].ne(0)
        error = ((count - 1) / count * spread).sqrt()
        stderr.append(error.masked_fill(agreeing | untrusted[k].ne(0), torch.inf))
    return tuple(full), tuple(stderr)
