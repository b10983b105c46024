"""The sampler's engine: a run as a loop over small stages.

:func:`sample` holds every chain of every network as a row of one path tensor (R = Bf·C,
N, Nt) and repeats, sweep by sweep:

- the moves (:class:`Moves`): local, multilevel, shift and cluster updates, in chunks of
  rows, and the tuning of the local step during thermalisation;
- the measurement (:class:`Measurement`): activities, the potential profile,
  Rao–Blackwell values and gradient statistics, into running sums and bins;
- the watch for non-finite paths (:class:`FiniteWatch`);
- at the end of each block, the stopping rule (:func:`_stopping`): the networks that stop
  leave the path tensor with their results frozen.

:func:`_output` then assembles the results and flags chains that cannot be trusted.
:mod:`qnn_torch.simulate` is the front end that validates the arguments and picks the
starting paths; :mod:`qnn_torch.path_bank` samples its bank here directly.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from qnn_torch.autograd import Jacobian
from qnn_torch.config import SamplerConfig
from qnn_torch.functional import compiled, fused_local
from qnn_torch.functional.conditional import conditional_well_sum
from qnn_torch.functional.gradient import CovarianceSums, action_derivatives
from qnn_torch.functional.observables import (
    binned_autocorrelation_time,
    chain_mean_and_error,
    student_t_sigmas,
)
from qnn_torch.functional.physics import double_well, potential_sum
from qnn_torch.functional.sampler import (
    Draw,
    LatticeFields,
    bisection_pass,
    check_counter_range,
    counter_draw,
    counter_local_sweep,
    move_counters,
    natural_step,
    neuron_fields,
    row_words,
    shift_move,
    sign_cluster_move,
)
from qnn_torch.functional.threefry import stage_keys
from qnn_torch.network import CompiledNetwork

_SERIES_BUDGET = 2**24  # stored (row, neuron, bin) values for autocorrelation times
_CPU_CHUNK_SITES = 2**18  # sites updated at once on CPU: keeps the working set in cache
# Sites per call when every move runs compiled: fewer, larger calls spread each call's
# cost (simulate with local moves: 1.28x the sites per second of 2**18 on 2 threads; the
# linked 64 → 10 network with the default moves: 20–22 against 32–36 ms per sweep, one
# process each). The numbers do not depend on the chunks. A run whose first compile fails
# goes on eagerly with these chunks.
_CPU_COMPILED_CHUNK_SITES = 2**21
# The compiled functions each move runs.
_COMPILED_MOVES = {
    "local": (compiled.local_half_sweep,),
    "multilevel": (compiled.bisection_blocks, compiled.counter_words),
    "cluster": (compiled.sign_cluster_flips, compiled.counter_words),
}
# The local proposal width follows log w ← log w + _TUNE_GAIN·(rate − target), by at most
# a factor e^±2 (e^±1.5 at the default target 0.5), after each of the first _TUNE_FAST
# thermalisation sweeps, then every _TUNE_EVERY: from any start (1e-5 or 10 times the
# natural width) it is within 10 % of its tuned value in about 10 sweeps, and a GPU waits
# for the count once per _TUNE_EVERY sweeps after that.
_TUNE_GAIN = 3.0
_TUNE_FAST = 20
_TUNE_EVERY = 10
# The moves with counter-based numbers, in the order of their keys (move i: stage
# sweep + i·2³²); keys are made for _KEY_BLOCK sweeps at once (about 1 ms eagerly, as for one).
_KEYED_MOVES = ("local", "multilevel", "shift", "cluster")
_KEY_BLOCK = 64
# Small runs draw a move's words for up to _KEY_BLOCK sweeps in one generator call, in banks
# of at most _BANK_BYTES for all rows (eagerly, one call of Threefry's ~140 operations
# costs about as much for one sweep of a small lattice as for 64), when that covers at
# least _MIN_BANK_SWEEPS sweeps; larger runs draw each sweep's words as they go.
_BANK_BYTES = 2**25
_MIN_BANK_SWEEPS = 8
# Chains from a fixed start (vacuum, saw, spikes) are flagged when their activity drifts
# between the halves of the measurement by more than this (in Gaussian standard errors, as
# a Student-t margin for the chains' degrees of freedom). (τ_int cannot serve: Sokal's
# window keeps its estimate below a fifth of the measured sweeps, whatever the chains do.)
_DRIFT_SIGMAS = 4.0
# A move that changes the paths' shape (local, multilevel) "hardly moves" them when it
# accepts fewer than this share, or (local, with a step below a tenth of its natural
# width) more than 1 − this share.
_MIXING_LIMIT = 0.01
# Sweeps between looks at the non-finite flag (each look waits for a GPU to catch up).
_CHECK_FINITE_EVERY = 16
_MOVE_HINTS = {
    "local": "step_size too large, or too few thermalization sweeps to tune it",
    "multilevel": "bisection segments too long for the well: fewer bisection_levels",
    "shift": "the whole path's level is pinned: a finer lattice or a longer time_extent",
}
NEURON_FAMILIES = ("drive", "input_inhibition")
"""Gradient families that act on one neuron each (the others are links)."""


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


def fixed_start(network: CompiledNetwork, config: SamplerConfig) -> Tensor:
    """The fixed starting paths (Bf·C, N, Nt) of ``config.init`` other than "equilibrium":
    ``"vacuum"`` φ ≡ 1; the paper's ``"saw"`` φ_t = t mod 2; ``"spikes"`` the spiking path
    |ψ_t| = √(1 − √g_t) of the active input, from the spike profile g_t = (ψ_t² − 1)². On
    ``config``'s device and dtype."""
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
    raise ValueError(f"init must be 'vacuum', 'saw' or 'spikes' here, got {config.init!r}")


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

    @classmethod
    def zeros(
        cls,
        phi: Tensor,
        networks: int,
        *,
        n_bins: int,
        record_profile: bool,
        covariance: dict[str, tuple[int, int, bool]],
        held: int | None,
    ) -> _Rows:
        """Nothing measured yet for the paths ``phi`` (R, N, Nt) of ``networks`` networks;
        ``covariance`` gives each gradient family's (observed neurons, entries, diagonal),
        ``held`` the Rao–Blackwell colour's width (None: none)."""
        (R, N, Nt), device = phi.shape, phi.device
        statistics = {"dtype": torch.float64, "device": device}
        return cls(
            networks=torch.arange(networks, device=device),
            phi=phi,
            reference=torch.zeros(R, N, **statistics),
            sums=torch.zeros(R, N, **statistics),
            squares=torch.zeros(R, N, **statistics),
            moved=torch.zeros(R, N, dtype=torch.bool, device=device),
            bins=torch.zeros(R, N, n_bins, **statistics),
            profile_sum=torch.zeros(R, N, Nt, **statistics) if record_profile else None,
            covariance={
                family: CovarianceSums.zeros(R, o, p, diagonal=diagonal, device=device)
                for family, (o, p, diagonal) in covariance.items()
            },
            held=None if held is None else torch.zeros(R, held, **statistics),
        )

    @property
    def chains(self) -> int:
        """Chains per network, C."""
        return self.phi.shape[0] // self.networks.shape[0]

    @property
    def rows(self) -> Tensor:
        """Each row's identity in the whole batch, network·C + chain, (Ba·C,) int64."""
        offsets = torch.arange(self.chains, device=self.networks.device)
        return (self.networks[:, None] * self.chains + offsets).flatten()

    def keep(self, networks: Tensor) -> None:
        """Keep only the ``networks`` (bool (Ba,)) and their rows."""
        rows = networks.repeat_interleave(self.chains)
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


class _WordBank:
    """One move's random words for one chunk of rows over a run of sweeps, drawn in one
    generator call: the words (2, S, r, K) of Threefry at the sorted ``counters`` (K,)
    int32 and the rows' identities ``rows`` (r,), under the move's keys (two int32
    tensors (S,)) of sweeps ``first``, ``first`` + ``every``, … (``every`` > 1: a move
    that runs every ``every``-th sweep)."""

    def __init__(
        self, counters: Tensor, rows: Tensor, keys: tuple[Tensor, Tensor], first: int, every: int
    ) -> None:
        self.counters, self.rows, self.first, self.every = counters, rows, first, every
        self.words = compiled.counter_words(counters, row_words(rows, 1), keys)

    def covers(self, rows: Tensor, sweep: int) -> bool:
        """Whether the bank holds sweep ``sweep`` of these ``rows``."""
        step, offset = divmod(sweep - self.first, self.every)
        return rows is self.rows and offset == 0 and 0 <= step < self.words.shape[1]

    def spent(self, sweep: int) -> bool:
        """Whether every sweep the bank holds comes before sweep ``sweep``."""
        return self.first + self.every * (self.words.shape[1] - 1) < sweep

    def draw(self, sweep: int) -> Draw:
        """The :data:`~qnn_torch.functional.sampler.Draw` of sweep ``sweep``: its words
        at counters of the bank's set, looked up."""
        words = self.words[:, (sweep - self.first) // self.every]
        return lambda counters: words.index_select(-1, torch.searchsorted(self.counters, counters))


class Moves:
    """The sweep stage: every move of ``config.moves`` on a chunk of rows, with acceptance
    counts, and the local step's tuning during thermalisation.

    Every move draws counter-based numbers: Threefry at the site and the row's identity,
    under a key of ``config.seed``, the sweep and the move
    (:func:`~qnn_torch.functional.sampler.site_counters`), so its numbers do not depend on
    the chunks, the compaction of stopped networks or the device. A run of ``rows`` rows
    of ``neurons`` neurons (1: shared numbers) small enough, and of at least
    _MIN_BANK_SWEEPS of its ``sweeps``, draws each move's words for many sweeps at once
    (:class:`_WordBank`: the same words). The local, multilevel and cluster moves run
    compiled where ``QNN_TORCH_COMPILE`` allows (:mod:`qnn_torch.functional.compiled`); on
    CUDA, the local move of rows without links runs the fused Triton kernel instead
    (:mod:`~qnn_torch.functional.fused_local`), which draws from a torch generator seeded
    with ``config.seed``. The multilevel blocks' offsets come from ``offsets`` (CPU),
    which no state affects.
    ``counts`` holds each Metropolis move's accepted and proposed updates (the cluster move
    is rejection-free); ``width`` is the local proposal width.
    """

    def __init__(
        self,
        config: SamplerConfig,
        device: torch.device,
        offsets: torch.Generator,
        *,
        rows: int,
        neurons: int,
        sweeps: int,
    ) -> None:
        self.config = config
        self.device = device
        self.generator = torch.Generator(device).manual_seed(config.seed)
        self.offsets = offsets
        self.width = config.step_size or natural_step(config.spacing)
        self.counts = {m: [_zero_count(device), 0] for m in config.moves if m != "cluster"}
        self._tune_counts = [_zero_count(device), 0]
        self._keys: dict[str, tuple[Tensor, Tensor]] = {}  # this sweep's, set by begin()
        self._key_block: tuple[int, Tensor, Tensor] | None = None
        self._offset = 0
        compiled_local = compiled.local_half_sweep.active()
        # The counters of each banked move per row and sweep (two words each; the cluster
        # move's every cluster_every-th sweep; the compiled local half-sweep draws its own).
        banked_moves = [m for m in config.moves if m != "local" or not compiled_local]
        counters = sum(
            move_counters(m, neurons, config.n_time, False, torch.device("cpu")).numel()
            / self._every(m)
            for m in banked_moves
        )
        self.sweep_bytes = math.ceil(8 * rows * counters)
        """The bytes of one sweep's words of every banked move, for all rows."""
        banked = min(_KEY_BLOCK, sweeps, _BANK_BYTES // max(self.sweep_bytes, 1))
        self.bank_sweeps = banked if banked >= _MIN_BANK_SWEEPS else 0
        self.sweeps = sweeps
        self._banks: dict[tuple[str, int], _WordBank] = {}

    def begin(self, sweep: int) -> None:
        """Draw what sweep ``sweep`` shares across its chunks: each move's counter key and
        the multilevel blocks' offset (drawn every sweep). Move i's key is that of stage
        sweep + i·2³² (:func:`~qnn_torch.functional.threefry.sweep_key`; the local move's
        is the sweep's own), made for _KEY_BLOCK sweeps at once."""
        if sweep >= 2**32:  # move i's stages would meet move i + 1's
            raise ValueError(f"a run has at most 2**32 sweeps, got sweep {sweep}")
        block, index = divmod(sweep, _KEY_BLOCK)
        if self._key_block is None or self._key_block[0] != block:
            stages = [
                s + (move << 32)
                for s in range(block * _KEY_BLOCK, (block + 1) * _KEY_BLOCK)
                for move in range(len(_KEYED_MOVES))
            ]
            k0, k1 = stage_keys(self.config.seed, stages, self.device)
            self._key_block = (block, k0.view(_KEY_BLOCK, -1), k1.view(_KEY_BLOCK, -1))
        _, k0, k1 = self._key_block
        self._keys = {move: (k0[index, i], k1[index, i]) for i, move in enumerate(_KEYED_MOVES)}
        self._offset = int(torch.randint(2**self.config.levels, (1,), generator=self.offsets))
        self._banks = {k: bank for k, bank in self._banks.items() if not bank.spent(sweep)}

    def _every(self, move: str) -> int:
        """Every how many sweeps ``move`` runs."""
        return self.config.cluster_every if move == "cluster" else 1

    def forget_banks(self) -> None:
        """Drop the banks of words: the chunks of rows changed (networks stopped)."""
        self._banks = {}

    def _draw(self, move: str, x: Tensor, part: LatticeFields, rows: Tensor, sweep: int) -> Draw:
        """The words of ``move`` in sweep ``sweep`` for the chunk ``x`` (r, N, Nt) of rows
        ``rows`` (r,): from the chunk's bank (made at need, for at most ``bank_sweeps``
        sweeps that run the move, up to the end of the key block), or drawn now."""
        if not self.bank_sweeps:
            return counter_draw(rows, self._keys[move], compiled.counter_words)
        bank = self._banks.get((move, id(rows)))
        if bank is None or not bank.covers(rows, sweep):
            every = self._every(move)
            index = sweep % _KEY_BLOCK
            stop = min(_KEY_BLOCK, index + every * self.bank_sweeps, index + self.sweeps - sweep)
            i = _KEYED_MOVES.index(move)
            assert self._key_block is not None
            _, k0, k1 = self._key_block
            keys = (k0[index:stop:every, i], k1[index:stop:every, i])
            _, N, Nt = x.shape
            counters = move_counters(move, N, Nt, part.shared_noise, x.device)
            bank = _WordBank(counters, rows, keys, sweep, every)
            self._banks[move, id(rows)] = bank
        return bank.draw(sweep)

    def sweep(
        self, x: Tensor, part: LatticeFields, rows: Tensor, sweep: int, measuring: bool
    ) -> None:
        """Sweep ``sweep`` (after :meth:`begin`) of the rows ``x`` (r, N, Nt), in place, with
        their physics ``part`` and identities ``rows`` (r,) (network·C + chain in the whole
        batch)."""
        config = self.config
        if "local" in config.moves:
            if fused_local.supports(x, part):
                accepted = fused_local.local_sweep(
                    x, part, width=self.width, generator=self.generator
                )
            else:
                # Compiled, the half-sweep draws its own words inside its loop nest.
                banked = self.bank_sweeps and not compiled.local_half_sweep.active()
                accepted = counter_local_sweep(
                    x,
                    part,
                    width=self.width,
                    key=self._keys["local"],
                    rows=rows,
                    half_sweep=compiled.local_half_sweep,
                    draw=self._draw("local", x, part, rows, sweep) if banked else None,
                )
            self._count("local", accepted, x.numel())
            if not measuring:
                self._tune_counts[0] += accepted
                self._tune_counts[1] += x.numel()
        if "multilevel" in config.moves:
            accepted, proposed = bisection_pass(
                x,
                part,
                levels=config.levels,
                offset=self._offset,
                draw=self._draw("multilevel", x, part, rows, sweep),
                blocks=compiled.bisection_blocks,
            )
            self._count("multilevel", accepted, proposed)
        if "shift" in config.moves:
            accepted, proposed = shift_move(
                x, part, width=config.shift_width, draw=self._draw("shift", x, part, rows, sweep)
            )
            self._count("shift", accepted, proposed)
        if "cluster" in config.moves and sweep % config.cluster_every == 0:
            sign_cluster_move(
                x,
                spacing=config.spacing,
                draw=self._draw("cluster", x, part, rows, sweep),
                shared_noise=part.shared_noise,
                flips=compiled.sign_cluster_flips,
            )

    def _count(self, move: str, accepted: Tensor, proposed: int | Tensor) -> None:
        self.counts[move][0] += accepted
        self.counts[move][1] += proposed

    def tune(self, sweep: int, measuring: bool) -> None:
        """After sweep ``sweep``: during thermalisation, move the local width towards the
        target acceptance (each of the first _TUNE_FAST sweeps, then every _TUNE_EVERY)."""
        tune_now = sweep < _TUNE_FAST or (sweep + 1) % _TUNE_EVERY == 0
        if "local" not in self.config.moves or measuring or not tune_now:
            return
        rate = float(self._tune_counts[0]) / max(self._tune_counts[1], 1)
        gain = _TUNE_GAIN * (rate - self.config.target_acceptance)
        self.width *= math.exp(min(2.0, max(-2.0, gain)))
        self._tune_counts = [_zero_count(self.device), 0]

    def acceptance(self) -> dict[str, float]:
        """Each move's acceptance rate over the run (the cluster move's is 1)."""
        rates = {name: float(c[0]) / max(int(c[1]), 1) for name, c in self.counts.items()}
        if "cluster" in self.config.moves:
            rates["cluster"] = 1.0
        return rates


class FiniteWatch:
    """The first sweep that left non-finite values (−1: none), kept on the device and read
    every _CHECK_FINITE_EVERY sweeps and before any result is taken."""

    def __init__(self, thermalization: int, dtype: torch.dtype, device: torch.device) -> None:
        self.thermalization = thermalization
        self.dtype = dtype
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def flag(self, sweep: int, values: Tensor) -> None:
        """Record ``sweep`` if ``values`` hold a non-finite number (no wait for the device)."""
        finite = torch.isfinite(values).all()
        self.first_bad = torch.where((self.first_bad < 0) & ~finite, sweep, self.first_bad)

    def check(self) -> None:
        """FloatingPointError naming the first sweep that left non-finite values, if any."""
        bad = int(self.first_bad)
        if bad >= 0:
            stage = "measurement" if bad >= self.thermalization else "thermalization"
            raise FloatingPointError(
                f"the simulation produced non-finite paths at sweep {bad} ({stage}); check "
                f"the strengths and lattice (dtype {self.dtype})"
            )


class Measurement:
    """The measurement stage: each measured sweep's samples O_n = Σ_t V0(φ_{n,t}) / norm
    into the running sums of :class:`_Rows`, with the potential profile, the Rao–Blackwell
    colour's conditional values every ``conditional[2]`` sweeps, the covariance statistics
    of the gradient families (each measured at ``entries[family]``, None: all) for the
    activities of neurons ``observed`` = (o0, o1), and the bins of ``bin_length`` sweeps
    (as many as :class:`_Rows` holds; later sweeps count in the sums only)."""

    def __init__(
        self,
        config: SamplerConfig,
        norm: float,
        conditional: tuple[int, int, int] | None,
        gradients: tuple[str, ...],
        entries: dict[str, Tensor | None],
        observed: tuple[int, int],
        bin_length: int,
        watch: FiniteWatch,
    ) -> None:
        self.config = config
        self.norm = norm
        self.conditional = conditional
        self.gradients = gradients
        self.entries = entries
        self.observed = observed
        self.bin_length = bin_length
        self.watch = watch

    def reference(self, state: _Rows, i: int, j: int) -> None:
        """Rows i..j − 1's values before the first measured sweep ("moved" compares to it)."""
        state.reference[i:j] = potential_sum(state.phi[i:j], self.config.lam).double() / self.norm

    def __call__(
        self, state: _Rows, i: int, j: int, part: LatticeFields, sweep: int, step: int
    ) -> None:
        """Measure rows i..j − 1 (physics ``part``) after sweep ``sweep``, the ``step``-th
        measured one."""
        x = state.phi[i:j]
        well = double_well(x, self.config.lam)  # V0 per slice: one pass serves both
        if state.profile_sum is not None:
            state.profile_sum[i:j] += well
        sample = well.sum(-1).double() / self.norm
        if self.conditional is not None:
            c0, c1, every = self.conditional
            if step % every == 0:
                self._conditional(state, i, j, part, sweep, step)
            sample[:, c0:c1] = state.held[i:j]
        state.sums[i:j] += sample
        state.moved[i:j] |= sample != state.reference[i:j]
        state.squares[i:j] += sample * sample
        if state.covariance:
            o0, o1 = self.observed
            derivatives = action_derivatives(x, part.profile, self.config.spacing, self.gradients)
            observable = sample[:, o0:o1]
            for family, stats in state.covariance.items():
                derivative = derivatives[family].flatten(1)
                if self.entries[family] is not None:
                    derivative = derivative[:, self.entries[family]]
                stats.add(i, j, observable, derivative)
        if step < state.bins.shape[-1] * self.bin_length:
            state.bins[i:j, :, step // self.bin_length] += sample / self.bin_length

    def _conditional(
        self, state: _Rows, i: int, j: int, part: LatticeFields, sweep: int, step: int
    ) -> None:
        """The Rao–Blackwell colour's exact expectations given the other neurons' paths."""
        c0, c1, _ = self.conditional
        x = state.phi[i:j]
        if not bool(torch.isfinite(x).all()):  # before the fields build a grid
            self.watch.flag(sweep, x)
            self.watch.check()
        drive, deepening, inhibition = neuron_fields(part, x, part.profile, c0, c1)
        expected = conditional_well_sum(
            drive,
            deepening=deepening,
            inhibition=inhibition,
            spacing=self.config.spacing,
            lam=self.config.lam,
        )
        state.held[i:j] = expected.double() / self.norm
        if step == 0:  # "moved" then tells whether the value ever changed
            state.reference[i:j, c0:c1] = state.held[i:j]


class Stops:
    """The stopping stage, at the end of each block: which networks stop, and their results.

    Networks stop at the last sweep, or in block mode when every neuron's error is at most
    ``target_stderr`` or ``stop_when`` says so (:func:`_stopping`); their results are
    frozen into ``finished`` (:func:`_stopped_results`).
    """

    def __init__(
        self,
        networks: int,
        chains: int,
        neurons: int,
        target_stderr: float,
        stop_when: StopCriterion | None,
        bin_length: int,
        device: torch.device,
    ) -> None:
        self.chains = chains
        self.target_stderr = target_stderr
        self.stop_when = stop_when
        self.bin_length = bin_length
        self.finished: list[dict[str, Tensor]] = []
        statistics = {"dtype": torch.float64, "device": device}
        # Every network's latest activity and error, for stop_when.
        self.latest = (
            {
                "activity": torch.zeros(networks, neurons, **statistics),
                "stderr": torch.zeros(networks, neurons, **statistics),
                "chain_activity": torch.zeros(networks, chains, neurons, **statistics),
            }
            if stop_when is not None
            else {}
        )

    def end_of_block(self, state: _Rows, measured: int, *, last: bool) -> Tensor:
        """After ``measured`` sweeps (``last``: the run's last), the networks of ``state``
        that stop, (Ba,) bool, with their results added to ``finished``."""
        C, N = self.chains, state.sums.shape[-1]
        chain_activity = (state.sums / measured).view(-1, C, N)
        activity, stderr = chain_mean_and_error(chain_activity, dim=1)
        if last:
            done = torch.ones_like(state.networks, dtype=torch.bool)
        else:
            done = _stopping(
                state.networks,
                state.moved.view(-1, C, N),
                measured,
                chain_activity,
                activity,
                stderr,
                self.latest,
                self.target_stderr,
                self.stop_when,
            )
        if bool(done.any()):
            self.finished.append(
                _stopped_results(
                    state, done, measured, self.bin_length, chain_activity, activity, stderr
                )
            )
        return done


@torch.no_grad()
def run(
    network: CompiledNetwork,
    config: SamplerConfig,
    start: Tensor,
    offsets: torch.Generator,
    *,
    fixed: bool,
    record_profile: bool = False,
    gradients: tuple[str, ...] = (),
    stop_when: StopCriterion | None = None,
    conditional: tuple[int, int, int] | None = None,
    observed: tuple[int, int] | None = None,
) -> SamplerOutput:
    """Run the sampler on ``network`` from the paths ``start`` (Bf·C, N, Nt), chains fastest
    (contiguous, on ``config``'s device and dtype; updated in place).

    ``offsets`` (CPU) draws the multilevel blocks' offsets, one per sweep. ``fixed``: the
    start is a fixed configuration (vacuum, saw, spikes), so chains that have not
    forgotten it are flagged. The other arguments are those of
    :func:`qnn_torch.simulate.run_sampler`, already checked (``conditional`` as (c0, c1,
    every), ``observed`` as the Jacobians' neuron range; None: all). Runs under no_grad.
    """
    start_time = time.perf_counter()
    device, dtype = torch.device(config.device), config.dtype
    Bf, N = network.drive.shape
    C, Nt = config.chains, config.n_time
    R = Bf * C
    check_counter_range(N, Nt, R)
    blocks = config.target_stderr > 0 or stop_when is not None
    max_sweeps = (config.max_sweeps or config.sweeps) if blocks else config.sweeps
    o0, o1 = observed or (0, N)
    # Without links between neurons: common random numbers for the neurons of a row (see
    # qnn_torch.functional.sampler), and the inputs' drive and inhibition, which act on one
    # neuron each, have diagonal Jacobians. Links couple the neurons: full Jacobians.
    independent = network.excite is None and network.inhibit is None
    # Jacobians: of the activities of neurons o0..o1 − 1 (all of an independent network),
    # by each neuron's input fields and by the link entries of the network's pattern.
    links = None if network.link_entries is None else network.link_entries.to(device)
    entries = {f: None if f in NEURON_FAMILIES else links for f in gradients}  # None: all
    row_fields = _row_fields(network, config, independent)
    all_compiled = all(
        move in _COMPILED_MOVES and all(f.active() for f in _COMPILED_MOVES[move])
        for move in config.moves
    )
    chunk_sites = _CPU_COMPILED_CHUNK_SITES if all_compiled else _CPU_CHUNK_SITES
    chunk = config.chunk_rows or (R if device.type == "cuda" else max(1, chunk_sites // (N * Nt)))
    max_bins = max(1, min(max_sweeps, _SERIES_BUDGET // (R * N)))
    bin_length = max_sweeps // max_bins
    state = _Rows.zeros(
        start,
        Bf,
        n_bins=max_sweeps // bin_length,
        record_profile=record_profile,
        covariance={
            family: (
                o1 - o0,
                N if family in NEURON_FAMILIES else (N * N if links is None else len(links)),
                independent and family in NEURON_FAMILIES,
            )
            for family in gradients
        },
        held=None if conditional is None else conditional[1] - conditional[0],
    )
    chunks = _chunked(row_fields(None), state.rows, chunk)
    total = config.thermalization + max_sweeps
    moves = Moves(config, device, offsets, rows=R, neurons=1 if independent else N, sweeps=total)
    watch = FiniteWatch(config.thermalization, dtype, device)
    measure = Measurement(
        config, network.activity_norm, conditional, gradients, entries, (o0, o1), bin_length, watch
    )
    stops = Stops(Bf, C, N, config.target_stderr, stop_when, bin_length, device)

    for sweep in tqdm(range(total), desc="sweeps", disable=not config.progress, leave=False):
        measuring = sweep >= config.thermalization
        step = sweep - config.thermalization
        moves.begin(sweep)
        for (i, j), part, rows in chunks:
            if sweep == config.thermalization:
                measure.reference(state, i, j)
            moves.sweep(state.phi[i:j], part, rows, sweep, measuring)
            if measuring:
                measure(state, i, j, part, sweep, step)
        # While measuring, the running sums turn non-finite with any path (one small check).
        watch.flag(sweep, state.sums if measuring else state.phi)
        if (sweep + 1) % _CHECK_FINITE_EVERY == 0:
            watch.check()
        moves.tune(sweep, measuring)
        measured = step + 1
        if measured == max_sweeps or (blocks and measured > 0 and measured % config.sweeps == 0):
            watch.check()
            stopped = stops.end_of_block(state, measured, last=measured == max_sweeps)
            if bool(stopped.all()):
                break
            if bool(stopped.any()):  # their rows leave the path tensor
                state.keep(~stopped)
                chunks = _chunked(row_fields(state.networks), state.rows, chunk)
                moves.forget_banks()
    return _output(_gather(stops.finished), state, moves, entries, (o0, o1), C, fixed, start_time)


def _output(
    out: dict[str, Tensor],
    state: _Rows,
    moves: Moves,
    entries: dict[str, Tensor | None],
    observed: tuple[int, int],
    chains: int,
    fixed: bool,
    start_time: float,
) -> SamplerOutput:
    """The run's output from the results ``out`` of every network (:func:`_gather`):
    Jacobians from the covariance sums, and infinite errors where the chains cannot be
    trusted (:func:`_stuck_networks`)."""
    o0, o1 = observed
    jacobians = {  # from sums per sweep: sweep counts may differ between networks
        family: Jacobian.from_sums(
            out["chain_activity"].flatten(0, 1)[:, o0:o1],
            CovarianceSums(
                out[f"{family} derivative"].flatten(0, 1),
                out[f"{family} product"].flatten(0, 1),
                stats.diagonal,
            ),
            1,
            chains,
            entries[family],
        )
        for family, stats in state.covariance.items()
    }
    stderr, tau = out["stderr"], out["autocorrelation_time"]
    hardly = _hardly_moving(moves.config, moves.counts, moves.width)
    unsettled = torch.zeros_like(out["sweeps"], dtype=torch.bool)
    if fixed:
        unsettled = _unsettled(out["drift"], chains)
    stuck = _stuck_networks(out["moved"], out["sweeps"], stderr, unsettled, moves.counts, hardly)
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
        acceptance=moves.acceptance(),
        step_size=moves.width,
        paths=out["paths"],
        potential_profile=out.get("potential_profile"),
        seconds=time.perf_counter() - start_time,
        jacobians=jacobians,
        sweeps=out["sweeps"],
    )


def _row_fields(
    network: CompiledNetwork, config: SamplerConfig, independent: bool
) -> Callable[[Tensor | None], LatticeFields]:
    """The physics of every chain of the given networks (indices; None: all)."""
    C = config.chains
    input_inhibition = network.input_inhibition if network.input_inhibition.ne(0).any() else None

    def row_fields(networks: Tensor | None) -> LatticeFields:
        def per_row(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return (t if networks is None else t[networks]).repeat_interleave(C, 0)

        return LatticeFields(
            lam=config.lam,
            spacing=config.spacing,
            profile=network.profile,
            drive=per_row(network.drive),
            input_inhibition=per_row(input_inhibition),
            excite=per_row(network.excite),
            inhibit=per_row(network.inhibit),
            color_bounds=network.color_bounds,
            shared_noise=independent,
        )

    return row_fields


def _chunked(
    fields: LatticeFields, rows: Tensor, chunk: int
) -> list[tuple[tuple[int, int], LatticeFields, Tensor]]:
    """Row ranges of at most ``chunk`` rows, their physics and their identities (of
    ``rows`` (R,), :attr:`_Rows.rows`)."""
    bounds = [(i, min(i + chunk, len(rows))) for i in range(0, len(rows), chunk)]
    return [((i, j), fields.rows(i, j), rows[i:j]) for i, j in bounds]


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
    measured: int,
    chain_activity: Tensor,
    activity: Tensor,
    stderr: Tensor,
    latest: dict[str, Tensor],
    target_stderr: float,
    stop_when: StopCriterion | None,
) -> Tensor:
    """Which networks still measuring may stop after this block, (Ba,) bool.

    ``networks`` (Ba,) are their batch indices, ``moved`` (Ba, C, N) over ``measured``
    sweeps as in :func:`_stuck_parts`, ``chain_activity`` (Ba, C, N) their chains' means,
    ``activity`` and ``stderr`` (Ba, N) their estimates. ``latest`` keeps every network's latest
    "activity", "stderr" (Bf, N) and "chain_activity" (Bf, C, N) for ``stop_when``
    (updated here). Errors of networks whose chains look stuck count as +inf.
    """
    frozen, agreeing = _stuck_parts(moved, stderr, measured)
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


def _stuck_parts(moved: Tensor, stderr: Tensor, measured: Tensor | int) -> tuple[Tensor, Tensor]:
    """Networks with a chain whose value never changed, and with chains that all agree.

    ``moved`` (Bf, C, N) tells whether a chain's measured value ever changed over its
    ``measured`` sweeps (an int, or (Bf,)), ``stderr`` (Bf, N) the error from the chains'
    spread (+inf where they agree to the last bit, see
    :func:`~qnn_torch.functional.observables.chain_mean_and_error`). One measured sweep
    shows no frozen chain: a chain that mixes keeps its value through a sweep now and then
    (about one chain in 10⁵ per sweep at the paper's lattice with the default moves).
    Returns two (Bf,) bool tensors.
    """
    frozen = ~moved.all(-1).all(-1) & (measured >= 2)
    return frozen, stderr.isinf().any(-1)


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
    measured: Tensor,
    stderr: Tensor,
    unsettled: Tensor,
    counts: dict[str, list[Tensor | int]],
    hardly_moving: str,
) -> Tensor:
    """Networks whose errors cannot be trusted, (Bf,) bool.

    ``moved``, ``measured`` (Bf,) and ``stderr`` as in :func:`_stuck_parts`, ``unsettled``
    (Bf,) bool from :func:`_unsettled`, ``counts`` the accepted and proposed moves by type,
    ``hardly_moving`` from :func:`_hardly_moving` (every network when not empty). Warns
    with a :class:`StuckChainWarning`.
    """
    problems = [
        f"the {name} move accepted none of its {int(proposed)} proposals ({_MOVE_HINTS[name]})"
        for name, (accepted, proposed) in counts.items()
        if int(proposed) > 0 and int(accepted) == 0
    ]
    frozen, agreeing = _stuck_parts(moved, stderr, measured)
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
    if problems:  # at run_sampler's caller
        warnings.warn("; ".join(problems), StuckChainWarning, stacklevel=5)
    return stuck
