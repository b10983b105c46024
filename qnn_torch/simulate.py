"""Run the Metropolis sampler on a network and collect activities with honest errors."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from qnn_torch.autograd import Jacobian, attach_jacobian
from qnn_torch.config import INITS, SamplerConfig, check_int
from qnn_torch.functional.conditional import conditional_well_sum
from qnn_torch.functional.gradient import PARAMETERS, CovarianceSums, action_derivatives
from qnn_torch.functional.observables import (
    binned_autocorrelation_time,
    chain_mean_and_error,
    student_t_sigmas,
)
from qnn_torch.functional.physics import double_well, potential_sum
from qnn_torch.functional.sampler import (
    LatticeFields,
    bisection_pass,
    local_sweep,
    natural_step,
    neuron_fields,
    shift_move,
    sign_cluster_move,
)
from qnn_torch.network import CompiledNetwork, Network
from qnn_torch.path_bank import path_bank

_SERIES_BUDGET = 2**24  # stored (row, neuron, bin) values for autocorrelation times
_CPU_CHUNK_SITES = 2**18  # sites updated at once on CPU: keeps the working set in cache
# The local proposal width follows log w ← log w + _TUNE_GAIN·(rate − target), by at most
# a factor e^±2 (e^±1.5 at the default target 0.5), after each of the first _TUNE_FAST
# thermalisation sweeps, then every _TUNE_EVERY: from any start (1e-5 or 10 times the
# natural width) it is within 10 % of its tuned value in about 10 sweeps, and a GPU waits
# for the count once per _TUNE_EVERY sweeps after that.
_TUNE_GAIN = 3.0
_TUNE_FAST = 20
_TUNE_EVERY = 10
# Chains from a fixed start (vacuum, saw, spikes) are flagged when their activity drifts
# between the halves of the measurement by more than this (in Gaussian standard errors, as
# a Student-t margin for the chains' degrees of freedom). (τ_int cannot serve: Sokal's
# window keeps its estimate below a fifth of the measured sweeps, whatever the chains do.)
_DRIFT_SIGMAS = 4.0
# A move that changes the paths' shape (local, multilevel) "hardly moves" them when it
# accepts fewer than this share, or (local, with a step below a tenth of its natural
# width) more than 1 − this share.
_MIXING_LIMIT = 0.01
MIN_CHAINS_FOR_ERRORS = 4
# Sweeps between looks at the non-finite flag (each look waits for a GPU to catch up).
_CHECK_FINITE_EVERY = 16
_MOVE_HINTS = {
    "local": "step_size too large, or too few thermalization sweeps to tune it",
    "multilevel": "bisection segments too long for the well: fewer bisection_levels",
    "shift": "the whole path's level is pinned: a finer lattice or a longer time_extent",
}


class StuckChainWarning(RuntimeWarning):
    """Monte Carlo chains that do not mix, so their errors cannot be trusted.

    Warned when a network has a chain whose measured activity never changed, or chains
    that all agree to the last bit; when chains from a fixed start (vacuum, saw, spikes)
    have not forgotten it: their activity drifts between the two halves of the
    measurement by more than 4 standard errors (as a Student-t margin for C − 1 degrees
    of freedom, so hardly ever with fewer than 4 chains); and when
    the moves that change the paths' shape hardly move them (acceptance below 1 %, or
    above 99 % for a local move whose step is below a tenth of its natural width). The
    standard errors and autocorrelation times of such networks are set to +inf: their
    activities are not estimates. A move that accepts nothing at all is reported too.
    """


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


@dataclass(frozen=True)
class SamplerOutput:
    """Raw statistics of a run, neurons in the compiled (colour) order.

    Shapes (Bf networks, C chains, N neurons, Nt slices): chain_activity (Bf, C, N);
    activity, stderr, autocorrelation_time (Bf, N); paths (Bf, C, N, Nt) (each network's
    last configuration); potential_profile (Bf, N, Nt) or None; sweeps (Bf,) int64, the
    measurement sweeps each network used. ``jacobians`` holds ∂A/∂θ of each parameter
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
    sweeps: Tensor


StopCriterion = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``stop_when(activity (Bf, N), stderr (Bf, N), chain_activity (Bf, C, N)) -> (Bf,) bool``:
the networks that may stop."""


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
    with torch.no_grad():
        return _run_sampler(
            network,
            config,
            record_profile,
            initial_paths,
            tuple(gradients),
            stop_when,
            conditional,
            observed,
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


@dataclass
class _Rows:
    """Per-row measurement state of the networks still measuring.

    Rows are (network, chain) pairs, chains fastest: ``networks`` (Ba,) holds the batch
    index of each network still measuring, phi (Ba·C, N, Nt) its paths; reference, sums,
    squares (Ba·C, N) float64 and moved (bool) the measured value before the measurement,
    the sums of the samples and of their squares, and whether a sample ever differed from
    the reference; bins (Ba·C, N, n_bins) the bin means; profile_sum (Ba·C, N, Nt) or None;
    held (Ba·C, n) the Rao–Blackwell colour's latest conditional values, or None.
    """

    networks: Tensor
    phi: Tensor
    reference: Tensor
    sums: Tensor
    squares: Tensor
    moved: Tensor
    bins: Tensor
    profile_sum: Tensor | None
    covariance: dict[str, CovarianceSums]
    held: Tensor | None = None

    def keep(self, networks: Tensor) -> None:
        """Keep only the ``networks`` (bool (Ba,)) and their rows."""
        rows = networks.repeat_interleave(self.phi.shape[0] // self.networks.shape[0])
        self.networks = self.networks[networks]
        for name in ("phi", "reference", "sums", "squares", "moved", "bins"):
            setattr(self, name, getattr(self, name)[rows])
        if self.profile_sum is not None:
            self.profile_sum = self.profile_sum[rows]
        if self.held is not None:
            self.held = self.held[rows]
        self.covariance = {
            family: CovarianceSums(stats.derivative[rows], stats.product[rows], stats.diagonal)
            for family, stats in self.covariance.items()
        }


def _run_sampler(
    network: CompiledNetwork,
    config: SamplerConfig,
    record_profile: bool,
    initial_paths: Tensor | None,
    gradients: tuple[str, ...],
    stop_when: StopCriterion | None,
    conditional: tuple[int, int, int] | None,
    observed: tuple[int, int],
) -> SamplerOutput:
    if set(gradients) - set(PARAMETERS):
        raise ValueError(f"gradients must name families of {PARAMETERS}, got {gradients!r}")
    if stop_when is not None and not callable(stop_when):
        raise ValueError(f"stop_when must be callable or None, got {stop_when!r}")
    if network.drive.shape[0] == 0:
        raise ValueError(f"network batch shape {tuple(network.batch_shape)} holds no network")
    start_time = time.perf_counter()
    device, dtype = torch.device(config.device), config.dtype
    Bf, N = network.drive.shape
    C, Nt, a = config.chains, config.n_time, config.spacing
    R = Bf * C
    blocks = config.target_stderr > 0 or stop_when is not None
    max_sweeps = (config.max_sweeps or config.sweeps) if blocks else config.sweeps

    input_inhibition = network.input_inhibition if network.input_inhibition.ne(0).any() else None
    # Without links between neurons: common random numbers for the neurons of a row (see
    # qnn_torch.functional.sampler), and the inputs' drive and inhibition, which act on one
    # neuron each, have diagonal Jacobians. Links couple the neurons: full Jacobians.
    independent = network.excite is None and network.inhibit is None
    # Jacobians: of the activities of neurons o0..o1 − 1 (all of an independent network),
    # by each neuron's input fields and by the link entries of the network's pattern.
    o0, o1 = observed
    neuron_families = ("drive", "input_inhibition")
    links = None if network.link_entries is None else network.link_entries.to(device)
    entries = {f: None if f in neuron_families else links for f in gradients}  # None: all
    link_count = N * N if links is None else len(links)

    def row_fields(networks: Tensor | None) -> LatticeFields:
        """The physics of every chain of ``networks`` (indices; None: all)."""

        def per_row(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return (t if networks is None else t[networks]).repeat_interleave(C, 0)

        return LatticeFields(
            lam=config.lam,
            spacing=a,
            profile=network.profile,
            drive=per_row(network.drive),
            input_inhibition=per_row(input_inhibition),
            excite=per_row(network.excite),
            inhibit=per_row(network.inhibit),
            color_bounds=network.color_bounds,
            shared_noise=independent,
        )

    if initial_paths is not None and initial_paths.shape != (Bf, C, N, Nt):
        raise ValueError(
            f"initial_paths must have shape {(Bf, C, N, Nt)}, got {tuple(initial_paths.shape)}"
        )
    generator = torch.Generator(device).manual_seed(config.seed)
    offsets = torch.Generator().manual_seed(config.seed)  # block offsets: state-independent
    chunk = config.chunk_rows or (
        R if device.type == "cuda" else max(1, _CPU_CHUNK_SITES // (N * Nt))
    )

    def chunked(fields: LatticeFields, rows: int) -> list[tuple[tuple[int, int], LatticeFields]]:
        """Row ranges of at most ``chunk`` rows and their physics."""
        bounds = [(i, min(i + chunk, rows)) for i in range(0, rows, chunk)]
        return [((i, j), fields.rows(i, j)) for i, j in bounds]

    chunks = chunked(row_fields(None), R)
    width = config.step_size or natural_step(a)
    levels = config.levels
    counts = {m: [_zero_count(device), 0] for m in config.moves if m != "cluster"}
    tune_counts = [_zero_count(device), 0]

    max_bins = max(1, min(max_sweeps, _SERIES_BUDGET // (R * N)))
    bin_length = max_sweeps // max_bins
    n_bins = max_sweeps // bin_length
    statistics = {"dtype": torch.float64, "device": device}
    state = _Rows(
        networks=torch.arange(Bf, device=device),
        phi=starting_paths(network, config, offsets)
        if initial_paths is None
        else initial_paths.to(device=device, dtype=dtype)
        .reshape(R, N, Nt)
        .clone(memory_format=torch.contiguous_format),
        reference=torch.zeros(R, N, **statistics),
        sums=torch.zeros(R, N, **statistics),
        squares=torch.zeros(R, N, **statistics),
        moved=torch.zeros(R, N, dtype=torch.bool, device=device),
        bins=torch.zeros(R, N, n_bins, **statistics),
        profile_sum=torch.zeros(R, N, Nt, **statistics) if record_profile else None,
        covariance={
            family: CovarianceSums.zeros(
                R,
                o1 - o0,
                N if family in neuron_families else link_count,
                diagonal=independent and family in neuron_families,
                device=device,
            )
            for family in gradients
        },
        held=None
        if conditional is None
        else torch.zeros(R, conditional[1] - conditional[0], **statistics),
    )
    norm = network.activity_norm
    # Block mode: every network's latest activity and error, for stop_when.
    latest = (
        {
            "activity": torch.zeros(Bf, N, **statistics),
            "stderr": torch.zeros(Bf, N, **statistics),
            "chain_activity": torch.zeros(Bf, C, N, **statistics),
        }
        if stop_when is not None
        else {}
    )
    finished: list[dict[str, Tensor]] = []  # results of the networks that stopped
    # The first sweep that left non-finite values (−1: none), kept on the device and read
    # every _CHECK_FINITE_EVERY sweeps and before any result is taken.
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def check_finite() -> None:
        bad = int(first_bad)
        if bad >= 0:
            stage = "measurement" if bad >= config.thermalization else "thermalization"
            raise FloatingPointError(
                f"the simulation produced non-finite paths at sweep {bad} ({stage}); check "
                f"the strengths and lattice (dtype {dtype})"
            )

    total = config.thermalization + max_sweeps
    for sweep in tqdm(range(total), desc="sweeps", disable=not config.progress, leave=False):
        measuring = sweep >= config.thermalization
        step = sweep - config.thermalization
        offset = int(torch.randint(2**levels, (1,), generator=offsets))
        for (i, j), part in chunks:
            x = state.phi[i:j]
            if sweep == config.thermalization:
                state.reference[i:j] = potential_sum(x, config.lam).double() / norm
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
            if "shift" in config.moves:
                accepted, proposed = shift_move(
                    x, part, width=config.shift_width, generator=generator
                )
                counts["shift"][0] += accepted
                counts["shift"][1] += proposed
            if "cluster" in config.moves and sweep % config.cluster_every == 0:
                sign_cluster_move(x, spacing=a, generator=generator, shared_noise=part.shared_noise)
            if measuring:
                well = double_well(x, config.lam)  # V0 per slice: one pass serves both
                if state.profile_sum is not None:
                    state.profile_sum[i:j] += well
                sample = well.sum(-1).double() / norm
                if conditional is not None:
                    c0, c1, every = conditional
                    if step % every == 0:
                        if not bool(torch.isfinite(x).all()):  # before fields build a grid
                            first_bad = torch.where(first_bad < 0, sweep, first_bad)
                            check_finite()
                        drive, deepening, inhibition = neuron_fields(part, x, part.profile, c0, c1)
                        expected = conditional_well_sum(
                            drive,
                            deepening=deepening,
                            inhibition=inhibition,
                            spacing=a,
                            lam=config.lam,
                        )
                        state.held[i:j] = expected.double() / norm
                        if step == 0:  # "moved" then tells whether the value ever changed
                            state.reference[i:j, c0:c1] = state.held[i:j]
                    sample[:, c0:c1] = state.held[i:j]
                state.sums[i:j] += sample
                state.moved[i:j] |= sample != state.reference[i:j]
                state.squares[i:j] += sample * sample
                if state.covariance:
                    derivatives = action_derivatives(x, part.profile, a, gradients)
                    observable = sample[:, o0:o1]
                    for family, stats in state.covariance.items():
                        derivative = derivatives[family].flatten(1)
                        if entries[family] is not None:
                            derivative = derivative[:, entries[family]]
                        stats.add(i, j, observable, derivative)
                if step < n_bins * bin_length:
                    state.bins[i:j, :, step // bin_length] += sample / bin_length
        # While measuring, the running sums turn non-finite with any path (one small check).
        finite = torch.isfinite(state.sums if measuring else state.phi).all()
        first_bad = torch.where((first_bad < 0) & ~finite, sweep, first_bad)
        if (sweep + 1) % _CHECK_FINITE_EVERY == 0:
            check_finite()
        tune_now = sweep < _TUNE_FAST or (sweep + 1) % _TUNE_EVERY == 0
        if "local" in config.moves and not measuring and tune_now:
            rate = float(tune_counts[0]) / max(tune_counts[1], 1)
            width *= math.exp(min(2.0, max(-2.0, _TUNE_GAIN * (rate - config.target_acceptance))))
            tune_counts = [_zero_count(device), 0]
        measured = step + 1
        if measured == max_sweeps or (blocks and measured > 0 and measured % config.sweeps == 0):
            check_finite()
            chain_activity = (state.sums / measured).view(-1, C, N)
            activity, stderr = chain_mean_and_error(chain_activity, dim=1)
            if measured == max_sweeps:
                done = torch.ones_like(state.networks, dtype=torch.bool)
            else:
                moved = state.moved.view(-1, C, N)
                done = _stopping(
                    state.networks,
                    moved,
                    chain_activity,
                    activity,
                    stderr,
                    latest,
                    config.target_stderr,
                    stop_when,
                )
            if not bool(done.any()):
                continue
            finished.append(
                _stopped_results(
                    state, done, measured, bin_length, chain_activity, activity, stderr
                )
            )
            if bool(done.all()):
                break
            state.keep(~done)
            chunks = chunked(row_fields(state.networks), state.phi.shape[0])

    out = _gather(finished)
    chain_means = out["chain_activity"].reshape(R, N)
    jacobians = {  # from sums per sweep: sweep counts may differ between networks
        family: Jacobian.from_sums(
            chain_means[:, o0:o1],
            CovarianceSums(
                out[f"{family} derivative"].flatten(0, 1),
                out[f"{family} product"].flatten(0, 1),
                stats.diagonal,
            ),
            1,
            C,
            entries[family],
        )
        for family, stats in state.covariance.items()
    }
    stderr, tau = out["stderr"], out["autocorrelation_time"]
    hardly = _hardly_moving(config, counts, width)
    unsettled = torch.zeros_like(out["sweeps"], dtype=torch.bool)
    if initial_paths is None and config.init != "equilibrium":  # a fixed start
        unsettled = _unsettled(out["drift"], C)
    stuck = _stuck_networks(out["moved"], stderr, unsettled, counts, hardly)
    if bool(stuck.any()):
        stderr, tau = _infinite_rows(stderr, stuck), _infinite_rows(tau, stuck)
        jacobians = {
            family: replace(jac, stderr=_infinite_rows(jac.stderr, stuck))
            for family, jac in jacobians.items()
        }
    return SamplerOutput(
        chain_activity=out["chain_activity"],
        activity=out["activity"],
        stderr=stderr,
        autocorrelation_time=tau,
        acceptance={
            **{name: float(c[0]) / max(int(c[1]), 1) for name, c in counts.items()},
            **({"cluster": 1.0} if "cluster" in config.moves else {}),  # rejection-free
        },
        step_size=width,
        paths=out["paths"],
        potential_profile=out.get("potential_profile"),
        seconds=time.perf_counter() - start_time,
        jacobians=jacobians,
        sweeps=out["sweeps"],
    )


def _stopped_results(
    state: _Rows,
    done: Tensor,
    measured: int,
    bin_length: int,
    chain_activity: Tensor,
    activity: Tensor,
    stderr: Tensor,
) -> dict[str, Tensor]:
    """The results of the networks that stop after ``measured`` sweeps, ``done`` (Ba,) bool.

    ``chain_activity`` (Ba, C, N), ``activity`` and ``stderr`` (Ba, N) are the estimates of
    every network still measuring (stderr raw: stuck chains are flagged at the end).
    Returns tensors with a leading axis over the Bd stopping networks: networks (batch
    indices), sweeps (Bd,); drift (Bd, N) (:func:`_drift`); chain_activity, moved
    (Bd, C, N); activity, stderr,
    autocorrelation_time (Bd, N); paths (Bd, C, N, Nt); potential_profile (Bd, N, Nt) when
    recorded; and per gradient family its sums per sweep, "<family> derivative" (Bd, C, P)
    and "<family> product" (Bd, C, N[, P]). Without a copy when every network stops.
    """
    C = chain_activity.shape[1]
    every = bool(done.all())
    rows = done.repeat_interleave(C)

    def pick(t: Tensor, per_row: bool = True) -> Tensor:
        return t if every else t[rows if per_row else done]

    Bd = int(done.sum())
    means = pick(chain_activity, per_row=False).view(Bd * C, -1)
    variance = (pick(state.squares) / measured - means**2).clamp_min(0.0)
    bins = pick(state.bins)[..., : measured // bin_length]
    phi = pick(state.phi)
    results = {
        "drift": _drift(bins.view(Bd, C, *bins.shape[1:])),
        "networks": pick(state.networks, per_row=False),
        "sweeps": torch.full((Bd,), measured, dtype=torch.int64, device=phi.device),
        "chain_activity": means.view(Bd, C, -1),
        "moved": pick(state.moved).view(Bd, C, -1),
        "activity": pick(activity, per_row=False),
        "stderr": pick(stderr, per_row=False),
        "autocorrelation_time": binned_autocorrelation_time(
            bins.view(Bd, C, *bins.shape[1:]).transpose(1, 2),
            bin_length,
            variance.view(Bd, C, -1).mean(1),
        ),
        "paths": phi.view(Bd, C, *phi.shape[1:]),
    }
    if state.profile_sum is not None:
        profile = pick(state.profile_sum)
        profile = profile.view(Bd, C, *profile.shape[1:]).mean(1)
        results["potential_profile"] = (profile / measured).to(phi.dtype)
    for family, stats in state.covariance.items():
        results[f"{family} derivative"] = (pick(stats.derivative) / measured).view(Bd, C, -1)
        product = pick(stats.product) / measured
        results[f"{family} product"] = product.view(Bd, C, *product.shape[1:])
    return results


def _stopping(
    networks: Tensor,
    moved: Tensor,
    chain_activity: Tensor,
    activity: Tensor,
    stderr: Tensor,
    latest: dict[str, Tensor],
    target_stderr: float,
    stop_when: StopCriterion | None,
) -> Tensor:
    """Which networks still measuring may stop after this block, (Ba,) bool.

    ``networks`` (Ba,) are their batch indices, ``moved`` (Ba, C, N) as in
    :func:`_stuck_parts`, ``chain_activity`` (Ba, C, N) their chains' means, ``activity``
    and ``stderr`` (Ba, N) their estimates. ``latest`` keeps every network's latest
    "activity", "stderr" (Bf, N) and "chain_activity" (Bf, C, N) for ``stop_when``
    (updated here). Errors of networks whose chains look stuck count as +inf.
    """
    frozen, agreeing = _stuck_parts(moved, stderr)
    stderr = _infinite_rows(stderr, frozen | agreeing)
    done = torch.zeros_like(networks, dtype=torch.bool)
    if target_stderr > 0:
        done |= (stderr <= target_stderr).all(-1)
    if stop_when is not None:
        latest["activity"][networks] = activity
        latest["stderr"][networks] = stderr
        latest["chain_activity"][networks] = chain_activity
        stop = stop_when(
            *(latest[name].clone() for name in ("activity", "stderr", "chain_activity"))
        )
        shape = latest["activity"].shape[:1]
        if not (isinstance(stop, Tensor) and stop.dtype == torch.bool and stop.shape == shape):
            got = f"{stop.dtype} {tuple(stop.shape)}" if isinstance(stop, Tensor) else repr(stop)
            raise ValueError(
                f"stop_when must return a bool tensor of shape {tuple(shape)}, got {got}"
            )
        done |= stop.to(done.device)[networks]
    return done


def _zero_count(device: torch.device) -> Tensor:
    """A 0-d int64 counter of accepted moves."""
    return torch.zeros((), dtype=torch.int64, device=device)


def _gather(finished: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The results of every network in batch order, from those of successive stops."""
    if len(finished) == 1:  # every network stopped at once: already in order
        return finished[0]
    order = torch.argsort(torch.cat([part["networks"] for part in finished]))
    return {name: torch.cat([part[name] for part in finished])[order] for name in finished[0]}


def _infinite_rows(t: Tensor, rows: Tensor) -> Tensor:
    """A copy of ``t`` holding +inf in the rows (first axis) where ``rows`` is true."""
    t = t.clone()
    t[rows] = math.inf
    return t


def _stuck_parts(moved: Tensor, stderr: Tensor) -> tuple[Tensor, Tensor]:
    """Networks with a chain whose value never changed, and with chains that all agree.

    ``moved`` (Bf, C, N) tells whether a chain's measured value ever changed, ``stderr``
    (Bf, N) the error from the chains' spread (+inf where they agree to the last bit, see
    :func:`~qnn_torch.functional.observables.chain_mean_and_error`). Returns two (Bf,)
    bool tensors.
    """
    return ~moved.all(-1).all(-1), stderr.isinf().any(-1)


def _drift(bins: Tensor) -> Tensor:
    """Student-t statistic of the drift between the two halves of the measurement.

    ``bins`` (B, C, N, nb) are each chain's bin means. With d_c the difference between the
    means of the last and the first ⌊nb/2⌋ bins of chain c, t = mean(d)/(std(d)/√C) over
    the independent chains, (B, N): a t variable with C − 1 degrees of freedom for chains
    in equilibrium, large where the chains still move away from their start together.
    NaN (no verdict) with fewer than 2 bins or chains that agree exactly.
    """
    half = bins.shape[-1] // 2
    if half == 0:
        shape = bins.shape[:1] + bins.shape[2:3]
        return torch.full(shape, math.nan, dtype=bins.dtype, device=bins.device)
    d = bins[..., -half:].mean(-1) - bins[..., :half].mean(-1)  # (B, C, N)
    return d.mean(1) / (d.std(1) / d.shape[1] ** 0.5)


def _unsettled(drift: Tensor, chains: int) -> Tensor:
    """Networks whose chains have not forgotten their common start, (Bf,) bool: a drift
    (Bf, N) (:func:`_drift`) beyond ``_DRIFT_SIGMAS`` as a Student-t margin for
    ``chains`` − 1 degrees of freedom (NaN: no verdict). With few chains the margin is
    wide (32.6 for 4 chains, 10⁴ for 2): such runs are hardly ever flagged."""
    return (drift.abs() > student_t_sigmas(_DRIFT_SIGMAS, chains)).any(-1)


def _hardly_moving(
    config: SamplerConfig, counts: dict[str, list[Tensor | int]], width: float
) -> str:
    """Why the moves that change the paths' shape hardly move them, or "" if they do.

    Every shape move (local, multilevel) accepting less than ``_MIXING_LIMIT``, or a local
    move alone whose step is below a tenth of its natural width 1.5·√(a/2) and accepts
    more than 1 − ``_MIXING_LIMIT`` (each step is then a tiny random walk).
    """
    rates = {
        name: float(accepted) / int(proposed)
        for name, (accepted, proposed) in counts.items()
        if name in ("local", "multilevel") and int(proposed) > 0
    }
    if rates and all(rate < _MIXING_LIMIT for rate in rates.values()):
        shown = ", ".join(f"{name} {100 * rate:.2g} %" for name, rate in rates.items())
        return f"the moves that change the paths' shape accept almost nothing ({shown})"
    natural = natural_step(config.spacing)
    if set(rates) == {"local"} and rates["local"] > 1 - _MIXING_LIMIT and width < 0.1 * natural:
        return (
            f"the local move accepts {100 * rates['local']:.3g} % of steps of width {width:.3g}, "
            f"under a tenth of its natural {natural:.3g}: the paths hardly move (a larger "
            "step_size, or thermalization sweeps to tune it)"
        )
    return ""


def _stuck_networks(
    moved: Tensor,
    stderr: Tensor,
    unsettled: Tensor,
    counts: dict[str, list[Tensor | int]],
    hardly_moving: str,
) -> Tensor:
    """Networks whose errors cannot be trusted, (Bf,) bool.

    ``moved`` and ``stderr`` as in :func:`_stuck_parts`, ``unsettled`` (Bf,) bool from
    :func:`_unsettled`, ``counts`` the accepted and proposed moves by type,
    ``hardly_moving`` from :func:`_hardly_moving` (every network when not empty). Warns
    with a :class:`StuckChainWarning`.
    """
    problems = [
        f"the {name} move accepted none of its {int(proposed)} proposals ({_MOVE_HINTS[name]})"
        for name, (accepted, proposed) in counts.items()
        if int(proposed) > 0 and int(accepted) == 0
    ]
    frozen, agreeing = _stuck_parts(moved, stderr)
    stuck = frozen | agreeing | unsettled
    if hardly_moving:
        problems.append(hardly_moving)
        stuck = torch.ones_like(stuck)
    if bool(stuck.any()):
        problems.append(
            f"{int(stuck.sum())} of {stuck.numel()} networks have a chain whose activity never "
            f"changed ({int(frozen.sum())}), chains that all agree ({int(agreeing.sum())}) or "
            f"chains that have not forgotten their start ({int(unsettled.sum())}: a drift "
            f"between the halves of the measurement beyond {_DRIFT_SIGMAS:g}σ; more "
            "thermalization sweeps)"
            + (", or moves that hardly move them" if hardly_moving else "")
            + ": their standard errors and autocorrelation times are set to inf"
        )
    if problems:
        warnings.warn("; ".join(problems), StuckChainWarning, stacklevel=4)
    return stuck


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

    ``"vacuum"`` φ ≡ 1; the paper's ``"saw"`` φ_t = t mod 2; ``"spikes"`` the spiking path
    |ψ_t| = √(1 − √g_t) of the active input, from the spike profile g_t = (ψ_t² − 1)²;
    ``"equilibrium"`` paths of the lattice's :func:`~qnn_torch.path_bank.path_bank` at each
    neuron's drive (``generator``, CPU, picks which). On ``config``'s device and dtype.
    """
    (Bf, N), C = network.drive.shape, config.chains
    shape, device, dtype = (Bf * C, N, config.n_time), torch.device(config.device), config.dtype
    if config.init == "vacuum":
        return torch.ones(shape, dtype=dtype, device=device)
    if config.init == "saw":
        saw = (torch.arange(shape[-1], device=device) % 2).to(dtype)
        return saw.expand(shape).contiguous()
    if config.init == "spikes":
        profile = network.profile.to(device=device, dtype=torch.float64)
        spikes = (1.0 - profile.sqrt()).clamp_min(0.0)
        return spikes.sqrt().to(dtype).expand(shape).contiguous()
    if config.init == "equilibrium":
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
        return start.to(device=device, dtype=dtype).reshape(shape)
    raise ValueError(f"init must be one of {INITS}, got {config.init!r}")


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
