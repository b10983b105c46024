"""Run the Metropolis sampler on a network and collect activities with honest errors."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from qnn_torch.autograd import Jacobian, attach_jacobian
from qnn_torch.config import SamplerConfig
from qnn_torch.functional.gradient import PARAMETERS, CovarianceSums, action_derivatives
from qnn_torch.functional.observables import binned_autocorrelation_time, chain_mean_and_error
from qnn_torch.functional.physics import double_well, potential_sum
from qnn_torch.functional.sampler import (
    LatticeFields,
    bisection_pass,
    local_sweep,
    sign_cluster_move,
)
from qnn_torch.network import CompiledNetwork, Network

_SERIES_BUDGET = 2**24  # stored (row, neuron, bin) values for autocorrelation times
_CPU_CHUNK_SITES = 2**18  # sites updated at once on CPU: keeps the working set in cache
_TUNE_EVERY = 10  # thermalisation sweeps between proposal-width updates
_MOVE_HINTS = {
    "local": "step_size too large, or too few thermalization sweeps to tune it",
    "multilevel": "bisection segments too long for the well: fewer bisection_levels",
}


class StuckChainWarning(RuntimeWarning):
    """A Monte Carlo chain did not move, so its errors cannot be measured.

    Raised (as a warning) when a Metropolis move accepted none of its proposals, or when a
    network has a chain whose measured activity never changed during the measurement, or
    chains that all agree to the last bit. The standard errors and autocorrelation times of
    such networks are set to +inf: their activities are not estimates.
    """


@dataclass(frozen=True)
class SamplerOutput:
    """Raw statistics of a run, neurons in the compiled (colour) order.

    Shapes (Bf networks, C chains, N neurons, Nt slices): chain_activity (Bf, C, N);
    activity, stderr, autocorrelation_time (Bf, N); paths (Bf, C, N, Nt);
    potential_profile (Bf, N, Nt) or None. ``jacobians`` holds ∂A/∂θ of each parameter
    family that was asked for (see :class:`~qnn_torch.autograd.Jacobian`).
    """

    chain_activity: Tensor
    activity: Tensor
    stderr: Tensor
    autocorrelation_time: Tensor
    acceptance: dict[str, float]
    step_size: float
    paths: Tensor
    potential_profile: Tensor | None
    seconds: float
    jacobians: dict[str, Jacobian]


def run_sampler(
    network: CompiledNetwork,
    config: SamplerConfig,
    *,
    record_profile: bool = False,
    initial_paths: Tensor | None = None,
    gradients: tuple[str, ...] = (),
) -> SamplerOutput:
    """Thermalise, then measure the activity A_n = ⟨Σ_t V0(φ_{n,t})⟩ / Σ_t V0(ψ_t).

    All networks of the batch and all chains are simulated at once as rows of one path
    tensor (R = Bf·C, N, Nt). ``initial_paths`` (Bf, C, N, Nt), e.g. the ``paths`` of an
    earlier run, replaces ``config.init``. ``gradients`` names parameter families of
    :data:`~qnn_torch.functional.gradient.PARAMETERS` whose Jacobian ∂A/∂θ = −Cov(O, ∂S/∂θ)
    is measured alongside (no extra random numbers: the paths are the same with or without).
    Raises FloatingPointError naming the sweep if a path becomes non-finite. Networks with
    stuck chains get infinite errors and a :class:`StuckChainWarning`.
    """
    with torch.no_grad():
        return _run_sampler(network, config, record_profile, initial_paths, tuple(gradients))


def _run_sampler(
    network: CompiledNetwork,
    config: SamplerConfig,
    record_profile: bool,
    initial_paths: Tensor | None,
    gradients: tuple[str, ...],
) -> SamplerOutput:
    if set(gradients) - set(PARAMETERS):
        raise ValueError(f"gradients must name families of {PARAMETERS}, got {gradients!r}")
    if network.drive.shape[0] == 0:
        raise ValueError(f"network batch shape {tuple(network.batch_shape)} holds no network")
    start_time = time.perf_counter()
    device, dtype = torch.device(config.device), config.dtype
    Bf, N = network.drive.shape
    C, Nt, a = config.chains, config.n_time, config.spacing
    R = Bf * C

    def per_row(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.repeat_interleave(C, 0)

    inhibition = network.input_inhibition if network.input_inhibition.ne(0).any() else None
    fields = LatticeFields(
        lam=config.lam,
        spacing=a,
        profile=network.profile,
        drive=per_row(network.drive),
        input_inhibition=per_row(inhibition),
        excite=per_row(network.excite),
        inhibit=per_row(network.inhibit),
        color_bounds=network.color_bounds,
    )
    if initial_paths is None:
        phi = starting_paths(config.init, (R, N, Nt), dtype=dtype, device=device)
    elif initial_paths.shape != (Bf, C, N, Nt):
        raise ValueError(
            f"initial_paths must have shape {(Bf, C, N, Nt)}, got {tuple(initial_paths.shape)}"
        )
    else:
        phi = initial_paths.to(device=device, dtype=dtype).reshape(R, N, Nt).clone()
    generator = torch.Generator(device).manual_seed(config.seed)
    offsets = torch.Generator().manual_seed(config.seed)  # block offsets: state-independent
    chunk = config.chunk_rows or (
        R if device.type == "cuda" else max(1, _CPU_CHUNK_SITES // (N * Nt))
    )
    chunks = [(i, min(i + chunk, R)) for i in range(0, R, chunk)]
    chunk_fields = [fields.rows(i, j) for i, j in chunks]
    width = config.step_size or 1.5 * math.sqrt(a / 2)
    levels = config.levels
    counts = {m: [phi.new_zeros((), dtype=torch.int64), 0] for m in config.moves if m != "cluster"}
    tune_counts = [phi.new_zeros((), dtype=torch.int64), 0]

    max_bins = max(1, min(config.sweeps, _SERIES_BUDGET // (R * N)))
    bin_length = config.sweeps // max_bins
    n_bins = config.sweeps // bin_length
    sums = torch.zeros(R, N, dtype=torch.float64, device=device)
    squares = torch.zeros_like(sums)
    # The measured value before the measurement, and whether a sample ever differed from it.
    reference = torch.zeros_like(sums)
    moved = torch.zeros(R, N, dtype=torch.bool, device=device)
    bins = torch.zeros(R, N, n_bins, dtype=torch.float64, device=device)
    profile_sum = (
        torch.zeros(R, N, Nt, dtype=torch.float64, device=device) if record_profile else None
    )
    norm = network.activity_norm
    # Inputs' drive and inhibition act on one neuron each: with no links between neurons
    # their Jacobians are diagonal. Links couple the neurons: full Jacobians.
    independent = network.excite is None and network.inhibit is None
    covariance = {
        family: CovarianceSums.zeros(
            R,
            N,
            N if family in ("drive", "input_inhibition") else N * N,
            diagonal=independent and family in ("drive", "input_inhibition"),
            device=device,
        )
        for family in gradients
    }

    total = config.thermalization + config.sweeps
    for sweep in tqdm(range(total), desc="sweeps", disable=not config.progress, leave=False):
        measuring = sweep >= config.thermalization
        offset = int(torch.randint(2**levels, (1,), generator=offsets))
        for (i, j), part in zip(chunks, chunk_fields, strict=True):
            x = phi[i:j]
            if sweep == config.thermalization:
                reference[i:j] = potential_sum(x, config.lam).double() / norm
            if "local" in config.moves:
                accepted = local_sweep(x, part, width=width, generator=generator)
                counts["local"][0] += accepted
                counts["local"][1] += x.numel()
                if not measuring:
                    tune_counts[0] += accepted
                    tune_counts[1] += x.numel()
            if "multilevel" in config.moves:
                accepted, proposed = bisection_pass(
                    x, part, levels=levels, offset=offset, generator=generator
                )
                counts["multilevel"][0] += accepted
                counts["multilevel"][1] += proposed
            if "cluster" in config.moves and sweep % config.cluster_every == 0:
                sign_cluster_move(x, spacing=a, generator=generator)
            if measuring:
                if profile_sum is not None:
                    profile_sum[i:j] += double_well(x, config.lam)
                sample = potential_sum(x, config.lam).double() / norm
                step = sweep - config.thermalization
                sums[i:j] += sample
                moved[i:j] |= sample != reference[i:j]
                squares[i:j] += sample * sample
                if covariance:
                    derivatives = action_derivatives(x, part.profile, a, gradients)
                    for family, stats in covariance.items():
                        stats.add(i, j, sample, derivatives[family].flatten(1))
                if step < n_bins * bin_length:
                    bins[i:j, :, step // bin_length] += sample / bin_length
        # While measuring, the running sums turn non-finite with any path (one small check).
        if not torch.isfinite(sums if measuring else phi).all():
            raise FloatingPointError(
                f"the simulation produced non-finite paths at sweep {sweep} "
                f"({'measurement' if measuring else 'thermalization'}); check the strengths "
                f"and lattice (dtype {dtype})"
            )
        if "local" in config.moves and not measuring and (sweep + 1) % _TUNE_EVERY == 0:
            rate = float(tune_counts[0]) / max(tune_counts[1], 1)
            width *= min(2.0, max(0.5, math.exp(2.0 * (rate - config.target_acceptance))))
            tune_counts = [phi.new_zeros((), dtype=torch.int64), 0]

    chain_means = sums / config.sweeps
    variance = (squares / config.sweeps - chain_means**2).clamp_min(0.0)
    chain_activity = chain_means.view(Bf, C, N)
    activity, stderr = chain_mean_and_error(chain_activity, dim=1)
    tau = binned_autocorrelation_time(
        bins.view(Bf, C, N, n_bins).transpose(1, 2), bin_length, variance.view(Bf, C, N).mean(1)
    )
    profile = None
    if profile_sum is not None:
        profile = (profile_sum.view(Bf, C, N, Nt).mean(1) / config.sweeps).to(dtype)
    jacobians = {
        family: Jacobian.from_sums(sums, stats, config.sweeps, C)
        for family, stats in covariance.items()
    }
    stuck = _stuck_networks(moved.view(Bf, C, N), stderr, counts)
    if bool(stuck.any()):
        stderr, tau = _infinite_rows(stderr, stuck), _infinite_rows(tau, stuck)
        jacobians = {
            family: replace(jac, stderr=_infinite_rows(jac.stderr, stuck))
            for family, jac in jacobians.items()
        }
    return SamplerOutput(
        chain_activity=chain_activity,
        activity=activity,
        stderr=stderr,
        autocorrelation_time=tau,
        acceptance={
            **{name: float(c[0]) / max(int(c[1]), 1) for name, c in counts.items()},
            **({"cluster": 1.0} if "cluster" in config.moves else {}),  # rejection-free
        },
        step_size=width,
        paths=phi.view(Bf, C, N, Nt),
        potential_profile=profile,
        seconds=time.perf_counter() - start_time,
        jacobians=jacobians,
    )


def _infinite_rows(t: Tensor, rows: Tensor) -> Tensor:
    """A copy of ``t`` holding +inf in the rows (first axis) where ``rows`` is true."""
    t = t.clone()
    t[rows] = math.inf
    return t


def _stuck_networks(moved: Tensor, stderr: Tensor, counts: dict[str, list[Tensor | int]]) -> Tensor:
    """Networks whose errors cannot be trusted, (Bf,) bool.

    ``moved`` (Bf, C, N) tells whether a chain's measured value ever changed, ``stderr``
    (Bf, N) is the spread of the chains (0: they agree to the last bit), ``counts`` the
    accepted and proposed moves by type. Warns with a :class:`StuckChainWarning`.
    """
    problems = [
        f"the {name} move accepted none of its {int(proposed)} proposals ({_MOVE_HINTS[name]})"
        for name, (accepted, proposed) in counts.items()
        if int(proposed) > 0 and int(accepted) == 0
    ]
    frozen = ~moved.all(-1).all(-1)
    agreeing = stderr.eq(0).any(-1)
    stuck = frozen | agreeing
    if bool(stuck.any()):
        problems.append(
            f"{int(stuck.sum())} of {stuck.numel()} networks have a chain whose activity never "
            f"changed ({int(frozen.sum())}) or chains that all agree ({int(agreeing.sum())}): "
            "their standard errors and autocorrelation times are set to inf"
        )
    if problems:
        warnings.warn("; ".join(problems), StuckChainWarning, stacklevel=4)
    return stuck


def starting_paths(
    init: str, shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Starting paths: ``"vacuum"`` φ ≡ 1, or the paper's ``"saw"`` φ_t = t mod 2."""
    if init == "vacuum":
        return torch.ones(shape, dtype=dtype, device=device)
    if init == "saw":
        saw = (torch.arange(shape[-1], device=device) % 2).to(dtype)
        return saw.expand(shape).contiguous()
    raise ValueError(f"init must be 'saw' or 'vacuum', got {init!r}")


@dataclass(frozen=True)
class SimulationResult:
    """Activities of a network's simulated neurons, by name.

    ``activity[name]``, ``stderr[name]`` and ``autocorrelation_time[name]`` (in sweeps)
    are tensors of the network's batch shape (0-d for an unbatched network, so ``float()``
    works). ``activity[name]`` is differentiable with respect to every strength and
    brightness given as a tensor with ``requires_grad=True`` (gradient −Cov(O, ∂S/∂θ),
    measured in the same run; :func:`~qnn_torch.autograd.grad_with_stderr` adds errors).
    ``acceptance`` gives the acceptance rate of each move. Tensors with a neuron axis
    follow ``names``: chain_activity (*batch, C, N), paths (*batch, C, N, Nt) (the last
    configuration), potential_profile (*batch, N, Nt) = ⟨V0(φ_{n,t})⟩ when recorded.
    """

    names: tuple[str, ...]
    batch_shape: torch.Size
    activity: dict[str, Tensor]
    stderr: dict[str, Tensor]
    autocorrelation_time: dict[str, Tensor]
    acceptance: dict[str, float]
    chain_activity: Tensor
    paths: Tensor
    potential_profile: Tensor | None
    step_size: float
    seconds: float


def simulate(
    network: Network, config: SamplerConfig | None = None, *, record_profile: bool = False
) -> SimulationResult:
    """Sample ``network`` with ``config`` (default: the paper's lattice) and report activities.

    A batched network (tensor strengths or brightnesses) is one batched simulation.
    ``record_profile`` also averages V0(φ_{n,t}) per slice (memory: one more path tensor).
    When gradients are enabled and a strength or brightness requires grad, the run also
    accumulates the covariances that make the activities differentiable (the paths, and
    so the activities, are bit-identical to a run without).
    """
    if not isinstance(network, Network):
        raise ValueError(f"network must be a qnn_torch.Network, got {type(network).__name__}")
    if config is None:
        config = SamplerConfig()
    elif not isinstance(config, SamplerConfig):
        raise ValueError(
            f"config must be a qnn_torch.SamplerConfig or None, got {type(config).__name__} "
            f"{config!r}"
        )
    compiled = network.compile(config)
    parameters = compiled.parameters()
    gradients = tuple(
        family
        for family, tensor in parameters.items()
        if torch.is_grad_enabled() and tensor.requires_grad
    )
    out = run_sampler(compiled, config, record_profile=record_profile, gradients=gradients)
    activity = attach_jacobian(
        out.activity,
        out.jacobians,
        parameters,
        names=compiled.order,
        what="a strength or brightness of the network",
    )
    shape = compiled.batch_shape
    user = torch.tensor(
        [compiled.order.index(n) for n in compiled.names], device=out.activity.device
    )

    def by_name(t: Tensor) -> dict[str, Tensor]:
        t = t.index_select(-1, user).cpu()
        return {name: t[:, k].reshape(shape) for k, name in enumerate(compiled.names)}

    def neurons_axis(t: Tensor, axis: int) -> Tensor:
        return t.index_select(axis, user).reshape(*shape, *t.shape[1:])

    return SimulationResult(
        names=compiled.names,
        batch_shape=shape,
        activity=by_name(activity),
        stderr=by_name(out.stderr),
        autocorrelation_time=by_name(out.autocorrelation_time),
        acceptance=out.acceptance,
        chain_activity=neurons_axis(out.chain_activity, -1),
        paths=neurons_axis(out.paths, 2),
        potential_profile=None
        if out.potential_profile is None
        else neurons_axis(out.potential_profile, 1),
        step_size=out.step_size,
        seconds=out.seconds,
    )
