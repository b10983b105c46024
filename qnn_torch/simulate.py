"""Run the Metropolis sampler on a network and collect activities with honest errors.

The front end: :func:`run_sampler` checks its arguments and picks the starting paths, and
:mod:`qnn_torch.engine` runs the sweeps; :func:`simulate` does the same for a named
:class:`~qnn_torch.network.Network` and reports by name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from qnn_torch import engine
from qnn_torch.autograd import attach_jacobian
from qnn_torch.config import SamplerConfig, check_int
from qnn_torch.engine import SamplerOutput, StopCriterion, StuckChainWarning
from qnn_torch.functional.gradient import PARAMETERS
from qnn_torch.network import CompiledNetwork, Network
from qnn_torch.path_bank import path_bank

__all__ = [
    "ColdStartWarning",
    "FewChainsWarning",
    "SamplerOutput",
    "SimulationResult",
    "StopCriterion",
    "StuckChainWarning",
    "check_conditional_every",
    "run_sampler",
    "simulate",
    "starting_paths",
    "wanted_gradients",
]

MIN_CHAINS_FOR_ERRORS = 4


class ColdStartWarning(RuntimeWarning):
    """Chains measured from a start that is not in equilibrium without thermalisation.

    The ``"vacuum"``, ``"saw"`` and ``"spikes"`` starts need ``thermalization`` sweeps
    (measured at the paper's lattice: 0 sweeps from the vacuum read −6.9σ, from the saw
    +7.7σ); ``"equilibrium"`` starts, and chains continued from given paths, do not.
    """


class FewChainsWarning(RuntimeWarning):
    """A standard error estimated from fewer than 4 independent chains.

    Its own relative scatter is 1/√(2(C − 1)) (71 % for 2 chains), and a 3σ rule on it is a
    Student-t rule with C − 1 degrees of freedom (200 identical networks with 2 chains were
    more than 3σ off in 16 % of cases): use 4 chains or more, 8 or more for decisions.
    """


def run_sampler(
    network: CompiledNetwork,
    config: SamplerConfig,
    *,
    record_profile: bool = False,
    initial_paths: Tensor | None = None,
    gradients: tuple[str, ...] = (),
    stop_when: StopCriterion | None = None,
    conditional_color: int | None = None,
    conditional_every: int = 1,
    jacobian_neurons: tuple[int, int] | None = None,
) -> SamplerOutput:
    """Thermalise, then measure the activity A_n = ⟨Σ_t V0(φ_{n,t})⟩ / Σ_t V0(ψ_t).

    All networks of the batch and all chains are simulated at once as rows of one path
    tensor (R = Bf·C, N, Nt). ``initial_paths`` (Bf, C, N, Nt), e.g. the ``paths`` of an
    earlier run, replaces ``config.init``; ``init="equilibrium"`` draws them from the
    lattice's :func:`~qnn_torch.path_bank.path_bank` at each neuron's drive. ``gradients``
    names parameter families of :data:`~qnn_torch.functional.gradient.PARAMETERS` whose
    Jacobian ∂A/∂θ = −Cov(O, ∂S/∂θ) is measured alongside (no extra random numbers: the
    paths are the same with or without). In a network with links, ``jacobian_neurons``
    (start, stop) restricts them to the activities of neurons start..stop − 1 (compiled
    order), e.g. a network's outputs when only those enter a loss: each family's Jacobian
    is then (Bf, stop − start, P), and costs that share of the full one; the excite and
    inhibit families are measured for ``network.link_entries`` only.

    Block mode, when ``config.target_stderr`` > 0 or ``stop_when`` is given: the
    measurement runs in blocks of ``config.sweeps`` sweeps (the last one cut at
    ``config.max_sweeps``). After each block every network still measuring gets its
    activities and standard errors from its chains so far, and stops when each neuron's
    error is at most ``target_stderr``, when ``stop_when(activity, stderr, chain_activity)``
    is true for it, or at ``max_sweeps``. ``stop_when`` sees every network of the batch,
    (Bf, N) and each chain's mean (Bf, C, N), in the compiled order, float64 (stopped
    networks with their final values; their answer is ignored) and returns (Bf,) bool.
    Errors of networks whose chains look stuck are +inf there (their chain activities are
    not marked: a criterion that reads them should check ``stderr``), so that they never
    stop early. A stopped network's rows leave the path tensor:
    its results, final paths and statistics are frozen and it costs nothing more.
    ``sweeps`` reports the measurement sweeps of each network; its autocorrelation times
    come from all of them (bins sized for ``max_sweeps``: +inf with fewer than two bins).
    Without either criterion every network measures ``config.sweeps`` sweeps.

    Rao–Blackwell measurement, with ``conditional_color`` (an index into
    ``network.color_bounds``): every ``conditional_every`` measurement sweeps, each neuron of
    that colour is measured by its exact expectation given the other neurons' current paths
    (:func:`~qnn_torch.functional.conditional.conditional_well_sum`) instead of its own
    path, and that value stands for it until the next. The mean is unchanged and the
    neuron's own quantum fluctuation leaves the error. It measures no gradients, and
    ``conditional_every`` must divide ``config.sweeps`` (and ``max_sweeps`` in block mode),
    so that every value counts alike. The held values make that colour's autocorrelation
    times (in sweeps) about ``conditional_every`` longer; ``potential_profile`` still comes
    from its paths. A neuron whose conditional value never varies (no link into it) has
    chains that agree to the last bit, and is flagged as stuck.

    Raises FloatingPointError naming the sweep if a path becomes non-finite. Networks with
    stuck chains get infinite errors and a :class:`StuckChainWarning`.
    """
    if isinstance(gradients, str) or not all(isinstance(g, str) for g in gradients):
        raise ValueError(
            f"gradients must be a tuple of names of {PARAMETERS}, e.g. ('drive',), "
            f"got {gradients!r}"
        )
    if initial_paths is None and config.thermalization == 0 and config.init != "equilibrium":
        warnings.warn(
            f"init={config.init!r} with thermalization=0: the chains are measured from a start "
            "that is not in equilibrium, and the activities lean towards it (give "
            "thermalization sweeps, or init='equilibrium')",
            ColdStartWarning,
            stacklevel=3,
        )
    conditional = _checked_conditional(
        network, config, conditional_color, conditional_every, gradients, stop_when
    )
    observed = _checked_jacobian_neurons(network, jacobian_neurons)
    if set(gradients) - set(PARAMETERS):
        raise ValueError(f"gradients must name families of {PARAMETERS}, got {gradients!r}")
    if stop_when is not None and not callable(stop_when):
        raise ValueError(f"stop_when must be callable or None, got {stop_when!r}")
    if network.drive.shape[0] == 0:
        raise ValueError(f"network batch shape {tuple(network.batch_shape)} holds no network")
    shape = (network.drive.shape[0], config.chains, network.drive.shape[1], config.n_time)
    if initial_paths is not None and initial_paths.shape != shape:
        raise ValueError(f"initial_paths must have shape {shape}, got {tuple(initial_paths.shape)}")
    # Picks the bank's paths, then the multilevel blocks' offsets: no state affects it.
    offsets = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        if initial_paths is None:
            start = starting_paths(network, config, offsets)
        else:
            # One copy (the run updates it in place), whatever the layout, device and dtype.
            start = torch.empty(shape, device=config.device, dtype=config.dtype)
            start = start.copy_(initial_paths).view(-1, *shape[2:])
        return engine.run(
            network,
            config,
            start,
            offsets,
            fixed=initial_paths is None and config.init != "equilibrium",
            record_profile=record_profile,
            gradients=tuple(gradients),
            stop_when=stop_when,
            conditional=conditional,
            observed=observed,
        )


def _checked_jacobian_neurons(
    network: CompiledNetwork, neurons: tuple[int, int] | None
) -> tuple[int, int]:
    """The range of neurons whose activities the Jacobians differentiate (all for None)."""
    n = network.drive.shape[-1]
    if neurons is None:
        return (0, n)
    if network.excite is None and network.inhibit is None:
        raise ValueError(
            f"jacobian_neurons={neurons!r} is for networks with links; independent neurons "
            "have diagonal Jacobians, which cost nothing to measure in full"
        )
    valid = (
        isinstance(neurons, tuple)
        and len(neurons) == 2
        and all(isinstance(i, int) and not isinstance(i, bool) for i in neurons)
        and 0 <= neurons[0] < neurons[1] <= n
    )
    if not valid:
        raise ValueError(
            f"jacobian_neurons must be a pair (start, stop) with 0 <= start < stop <= {n}, "
            f"got {neurons!r}"
        )
    return neurons


def check_conditional_every(every: int, config: SamplerConfig, *, blocks: bool) -> None:
    """ValueError unless ``every`` is an integer >= 1 dividing ``config.sweeps`` and, in
    block mode (``blocks``), ``config.max_sweeps``: the Rao–Blackwell period of
    :func:`run_sampler`, whose every conditional value must count alike."""
    check_int("conditional_every", every, 1)
    lengths = {"sweeps": config.sweeps}
    if blocks and config.max_sweeps:
        lengths["max_sweeps"] = config.max_sweeps
    for name, length in lengths.items():
        if length % every:
            raise ValueError(
                f"conditional_every={every} must divide config.{name}={length}, so that "
                "every conditional measurement counts alike"
            )


def _checked_conditional(
    network: CompiledNetwork,
    config: SamplerConfig,
    color: int | None,
    every: int,
    gradients: tuple[str, ...],
    stop_when: StopCriterion | None,
) -> tuple[int, int, int] | None:
    """The Rao–Blackwell colour's neuron range and period, (c0, c1, every), or None."""
    check_int("conditional_every", every, 1)
    if color is None:
        return None
    colors = len(network.color_bounds)
    if isinstance(color, bool) or not isinstance(color, int) or not -colors <= color < colors:
        raise ValueError(
            f"conditional_color must index one of the network's {colors} colours, got {color!r}"
        )
    check_conditional_every(every, config, blocks=config.target_stderr > 0 or stop_when is not None)
    if gradients:
        raise ValueError(
            f"conditional_every={every} is for evaluation: the conditional colour carries no "
            f"gradients, got gradients={tuple(gradients)!r}; measure it by its own paths to "
            "train (or run under torch.no_grad())"
        )
    return (*network.color_bounds[color], every)


def wanted_gradients(parameters: dict[str, Tensor]) -> tuple[str, ...]:
    """The parameter families (of :meth:`CompiledNetwork.parameters`) whose Jacobians a run
    should measure: those that require grad, while gradients are enabled."""
    if not torch.is_grad_enabled():
        return ()
    return tuple(family for family, tensor in parameters.items() if tensor.requires_grad)


def starting_paths(
    network: CompiledNetwork, config: SamplerConfig, generator: torch.Generator
) -> Tensor:
    """Starting paths (Bf·C, N, Nt) of ``network``'s chains, chains fastest: ``config.init``.

    ``"equilibrium"``: paths of the lattice's :func:`~qnn_torch.path_bank.path_bank` at each
    neuron's drive (``generator``, CPU, picks which); the others are the fixed starts of
    :func:`~qnn_torch.engine.fixed_start`. On ``config``'s device and dtype.
    """
    if config.init != "equilibrium":
        return engine.fixed_start(network, config)
    C = config.chains
    drive = network.drive.detach()
    bank = path_bank(
        config.n_time,
        config.time_extent,
        config.lam,
        config.n_kinks,
        max_drive=float(drive.max()),
        chains=C,
    )
    start = bank.starting_paths(drive, C, generator)
    shape = (drive.shape[0] * C, drive.shape[1], config.n_time)
    return start.to(device=torch.device(config.device), dtype=config.dtype).reshape(shape)


@dataclass(frozen=True)
class SimulationResult:
    """Activities of a network's simulated neurons, by name.

    ``activity[name]``, ``stderr[name]`` and ``autocorrelation_time[name]`` (in sweeps)
    are tensors of the network's batch shape (0-d for an unbatched network, so ``float()``
    works). ``activity[name]`` is differentiable with respect to every strength and
    brightness given as a tensor with ``requires_grad=True`` (gradient −Cov(O, ∂S/∂θ),
    measured in the same run; :func:`~qnn_torch.autograd.grad_with_stderr` adds errors).
    ``acceptance`` gives the acceptance rate of each move, ``sweeps`` (int64, batch shape)
    the measurement sweeps each network used (``config.sweeps`` unless
    ``config.target_stderr`` asked for more precision). Tensors with a neuron axis
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
    sweeps: Tensor


def simulate(
    network: Network, config: SamplerConfig | None = None, *, record_profile: bool = False
) -> SimulationResult:
    """Sample ``network`` with ``config`` (default: the paper's lattice) and report activities.

    A batched network (tensor strengths or brightnesses) is one batched simulation.
    ``record_profile`` also averages V0(φ_{n,t}) per slice (memory: one more path tensor).
    With ``config.target_stderr`` > 0 each network measures in blocks of ``config.sweeps``
    until every neuron's standard error is at most that, or ``config.max_sweeps``
    (:func:`run_sampler`); ``sweeps`` in the result tells how many each used.
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
    if config.chains < MIN_CHAINS_FOR_ERRORS:
        warnings.warn(
            f"chains={config.chains}: standard errors from fewer than {MIN_CHAINS_FOR_ERRORS} "
            "independent chains are themselves very uncertain (see FewChainsWarning)",
            FewChainsWarning,
            stacklevel=2,
        )
    compiled = network.compile(config)
    parameters = compiled.parameters()
    gradients = wanted_gradients(parameters)
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
        sweeps=out.sweeps.cpu().reshape(shape),
    )
