"""Sampler configuration."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import torch

from qnn_torch.functional.physics import (
    kink_action,
    kink_path,
    potential_sum,
    real_number,
    validate_kinks,
    validate_lattice,
)

MOVES = ("local", "multilevel", "shift", "cluster")
INITS = ("saw", "spikes", "vacuum", "equilibrium")
SEED_LIMIT = 2**63  # a seed must fit a signed 64-bit integer (an int64 tensor, numpy, C)
# Longest bisection segment, in correlation lengths 1/ω = 1/√(2Λ) of a well. The first
# midpoint of a segment of duration L is drawn from a free bridge of variance L/4, while
# the well holds the path within a variance 1/(2ω): the proposal is Lω/2 times too wide.
# Allow at most twice too wide, Lω ≤ 4 (automatic levels above 1 give Lω < 2√2; one
# level is a single slice, the shortest segment there is, and is never refused). Measured
# (relay at 6000, Nt = 64, 2000 sweeps, multilevel alone): Lω = 3.3 accepts 33% and
# matches the exact activity; Lω = 7.7 accepts 6% and is 11σ off; Lω = 34 never moves.
MAX_SEGMENT_CORRELATION_LENGTHS = 4.0
# Below T·√(2Λ) = 1 the whole path's level is the slowest mode, and only the "shift" move
# changes it (measured: relay at 3000, Nt = 32, 8 chains × (1000 + 1000) sweeps without it,
# T = 0.001 (T·√(2Λ) = 0.1) was wrong in 95–100 % of runs, T = 0.0025 still −4σ, T ≥ 0.01
# fine). "auto" adds the move below AUTO_SHIFT_BELOW, with a margin.
SHIFT_NEEDED_BELOW = 1.0
AUTO_SHIFT_BELOW = 2.0
# The activity is normalised by the input's Σ_t V0(ψ_t); when the slices miss the kinks
# (n_kinks ≈ n_time) it collapses towards 0 (1e-5 of its value on a fine lattice at
# Nt = n_kinks = 4, where every activity reads ~10³). Refuse lattices below this fraction.
MIN_KINK_RESOLUTION = 0.25
MAX_REFINED_SLICES = 2**20
# target_stderr's rule reads the error estimate of the chains and stops on its low values:
# 300 networks at the test lattice reported errors 3.2× (3 chains), 2.4× (4), 1.4× (8) and
# 1.07× (16) too small (qnn-benchmark-sampler --sections precision).
MIN_CHAINS_FOR_TARGET = 16  # of the lattice on which the kinks are resolved, to compare
INT_FIELDS = ("n_time", "n_kinks", "chains", "thermalization", "sweeps", "seed",
              "bisection_levels", "cluster_every", "chunk_rows", "max_sweeps")  # fmt: skip
FLOAT_FIELDS = ("time_extent", "lam", "step_size", "target_acceptance", "target_stderr")


@dataclass(frozen=True)
class SamplerConfig:
    """Lattice, physics and Monte Carlo settings of a simulation.

    Lattice and potential: ``n_time`` slices (even) over the periodic Euclidean time
    ``time_extent``, double-well height ``lam`` (Λ), and ``n_kinks`` (even, ≥ 2) equally spaced
    kinks in the active input path. The defaults are the paper's.

    Monte Carlo: ``chains`` independent chains per network (the standard error comes from
    their spread), ``thermalization`` sweeps (discarded; the local proposal width is tuned
    during these only) and ``sweeps`` measurement sweeps. ``algorithm`` names the moves of
    one sweep, joined by "+", applied in this order:

    - ``"local"``: a checkerboard single-site Metropolis sweep (alone: the baseline);
    - ``"multilevel"``: a pass of bisection moves (Ceperley's multilevel Metropolis) over
      non-overlapping segments of ``2**levels − 1`` slices, at a random offset (levels:
      ``bisection_levels``, or automatic from the lattice when 0, see :attr:`levels`;
      explicit levels whose segments span more than 4 correlation lengths 1/√(2Λ) are
      refused: such moves are rarely accepted and the chains do not equilibrate);
    - ``"shift"``: a Metropolis move of each neuron's whole path by one δ (half-width
      :attr:`shift_width`), accepted on the exact change of the potential (the kinetic term
      does not change): it moves the path's level, the slow mode when the time extent is
      short (T·√(2Λ) < 1, where moves without it are refused);
    - ``"cluster"``: a Swendsen–Wang update of the signs of the paths (every
      ``cluster_every``-th sweep), which reflects a path between near-zero points: it
      equilibrates the sign sector between spikes and removes the spurious kinks of the
      saw start, modes that the other moves leave slow.

    The default ``"auto"`` picks the scheme that measured best: ``"multilevel+cluster"``
    on fine lattices (a·√(2Λ) < 1, the paper's is 0.14), and
    ``"local+multilevel+cluster"`` on coarse ones, where the potential dominates and
    bridge proposals alone mix slowly; both with ``"shift"`` where T·√(2Λ) < 2.
    :attr:`moves` tells which. The local proposal width is tuned after every
    thermalisation sweep towards ``target_acceptance`` (from any ``step_size`` within
    about 10 sweeps); chains that still do not mix are flagged (:class:`~qnn_torch.
    StuckChainWarning`, infinite errors).

    Precision on demand: with ``target_stderr`` > 0 (absolute, in activity units; 0: off)
    the measurement runs in blocks of ``sweeps`` sweeps, and a network stops once the
    standard error of each of its neurons is at most ``target_stderr``, or once it has
    measured ``max_sweeps`` sweeps (> ``sweeps`` then; the last block is cut there).
    ``max_sweeps`` also bounds the blocks of :func:`~qnn_torch.simulate.run_sampler`'s
    ``stop_when``; 0 means ``sweeps`` (no extension). Without a stopping criterion every
    network measures ``sweeps``. The rule reads the measured error, which itself scatters
    by about 1/√(2·(chains − 1)) relative, so that a network stops on a low estimate: it
    needs ``chains`` ≥ 16 (with 8 chains the true spread was 1.4× the reported error).

    ``init`` is ``"vacuum"`` (φ ≡ 1), the paper's ``"saw"`` (φ_t = t mod 2),
    ``"spikes"``, the active input's spiking path |ψ_t|, which has activity 1 and lies
    close to a driven neuron's typical paths: from it the paper's lattice equilibrates at
    drives 3000–12 000 within ~100 sweeps, where the vacuum start is still 0.1–0.5 low
    after 100 and needs several hundred; or ``"equilibrium"``: each neuron starts from a
    path sampled in equilibrium for a neuron driven alone at the nearest of 512 tabulated
    drives (:func:`~qnn_torch.path_bank.path_bank`, built once per lattice, ~25 s at the
    paper's, and cached on disk; the chains of a network start from distinct paths, and
    every network draws from the same 8 paths per drive, or 2^k ≥ chains). Independent
    driven neurons, such as a ``QuantumNeuronLayer``'s outputs, then need no
    thermalisation (measured at the paper's lattice with 100 sweeps; in the first few
    sweeps an estimate leans on the shared starting paths, and slow modes such as the
    number of kinks may make short runs' errors too small); for linked neurons it is a warm
    start that ignores the links. The same
    ``seed`` (0 ≤ seed < 2**63) on the same ``device`` gives identical results. The
    ``"vacuum"``, ``"saw"`` and ``"spikes"`` starts need ``thermalization`` (without it a
    :class:`~qnn_torch.ColdStartWarning`). The lattice must resolve the input's kinks
    (at most n_time/2 of them, and Σ_t V0(ψ_t) at least a quarter of its value with the
    kinks resolved: it normalises every activity). Numpy scalars become Python numbers.
    ``chunk_rows`` bounds how many (network, chain) rows are updated at once (0: automatic,
    cache-sized on CPU, all rows on CUDA). ``progress`` shows a progress bar over sweeps.

    Attributes:
        n_time: Time slices of the lattice (even).
        time_extent: Periodic Euclidean time T.
        lam: Height Λ of the double well.
        n_kinks: Kinks of the active input path (even, >= 2).
        chains: Independent chains per network (>= 2; errors come from their spread).
        thermalization: Discarded sweeps per chain.
        sweeps: Measurement sweeps per chain (per block with target_stderr or a cap).
        algorithm: Moves joined by "+" (local, multilevel, shift, cluster), or "auto".
        init: Starting paths: vacuum, saw, spikes or equilibrium.
        seed: Seed of the random numbers (0 <= seed < 2**63).
        device: Torch device of the simulation.
        dtype: torch.float32 or torch.float64.
        step_size: Initial local proposal width (0: natural), tuned while thermalising.
        target_acceptance: Acceptance rate the width tuning aims at.
        bisection_levels: Bisection levels (0: from the lattice).
        cluster_every: Sign-cluster update every this many sweeps.
        chunk_rows: Rows updated at once (0: automatic).
        progress: Show a progress bar over sweeps.
        target_stderr: Measure until every standard error is at most this (0: off).
        max_sweeps: Cap of measurement sweeps per network (0: sweeps).
    """

    n_time: int = 512
    time_extent: float = 0.7
    lam: float = 5000.0
    n_kinks: int = 4
    chains: int = 8
    thermalization: int = 200
    sweeps: int = 400
    algorithm: str = "auto"
    init: str = "vacuum"
    seed: int = 0
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32
    step_size: float = 0.0
    target_acceptance: float = 0.5
    bisection_levels: int = 0
    cluster_every: int = 4
    chunk_rows: int = 0
    progress: bool = False
    target_stderr: float = 0.0
    max_sweeps: int = 0

    def __post_init__(self) -> None:
        self._plain_numbers()
        for name in ("time_extent", "lam", "step_size", "target_acceptance"):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                raise ValueError(
                    f"{name} must be a Python number, got a tensor: the lattice and the "
                    "potential are not differentiable (activities are differentiable with "
                    "respect to strengths and brightnesses, and a layer's weight and input)"
                )
            real_number(name, value)  # NotRealError for a bool, complex or string
        validate_lattice(self.n_time, self.time_extent, self.lam)
        validate_kinks(self.n_kinks)
        self._check_kinks()
        check_int("chains", self.chains, 2)
        check_int("thermalization", self.thermalization, 0)
        check_int("sweeps", self.sweeps, 1)
        self._check_precision()
        check_int("seed", self.seed, 0)
        if self.seed >= SEED_LIMIT:
            raise ValueError(f"seed must be < 2**63, got {self.seed!r}")
        check_int("chunk_rows", self.chunk_rows, 0)
        check_int("bisection_levels", self.bisection_levels, 0)
        if 2**self.bisection_levels > self.n_time:
            raise ValueError(
                f"bisection_levels must satisfy 2**bisection_levels <= n_time={self.n_time}, "
                f"got {self.bisection_levels}"
            )
        check_int("cluster_every", self.cluster_every, 1)
        moves = self.algorithm.split("+") if isinstance(self.algorithm, str) else []
        if self.algorithm != "auto" and (
            not set(moves) <= set(MOVES)
            or len(set(moves)) != len(moves)
            or not {"local", "multilevel"} & set(moves)
        ):
            raise ValueError(
                f"algorithm must be 'auto' or join distinct moves of {MOVES} with '+', including "
                f"'local' or 'multilevel' (e.g. 'local', 'multilevel+cluster'), "
                f"got {self.algorithm!r}"
            )
        self._check_segment()
        self._check_shift()
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {self.dtype!r}")
        if not math.isfinite(self.step_size) or self.step_size < 0:
            raise ValueError(f"step_size must be >= 0 (0: automatic), got {self.step_size!r}")
        if not 0 < self.target_acceptance < 1:
            raise ValueError(
                f"target_acceptance must lie in (0, 1), got {self.target_acceptance!r}"
            )
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"device must be a torch.device or a string such as 'cpu' or 'cuda:0', "
                f"got {self.device!r}"
            ) from None

    def _plain_numbers(self) -> None:
        """Numpy (or other numbers.Real) scalars become Python ints and floats, so that the
        config saves as plain values (a layer's ``state_dict`` loads with ``weights_only``);
        complex numbers, bools, tensors and strings are left for the checks to refuse."""
        for names, kind, plain in (
            (INT_FIELDS, numbers.Integral, int),
            (FLOAT_FIELDS, numbers.Real, float),
        ):
            for name in names:
                value = getattr(self, name)
                if isinstance(value, kind) and not isinstance(value, bool | plain):
                    object.__setattr__(self, name, plain(value))

    def _check_kinks(self) -> None:
        """Refuse input paths the lattice cannot resolve (the activity's normalisation)."""
        if self.n_kinks == 0:
            raise ValueError(
                "n_kinks must be >= 2: the activity is normalised by the potential of the "
                "kinks, Σ_t V0(ψ_t), which vanishes without kinks; got 0"
            )
        if self.n_kinks > self.n_time // 2:
            raise ValueError(
                f"n_kinks must be at most n_time/2 = {self.n_time // 2} (two slices per kink), "
                f"got {self.n_kinks}"
            )
        width = math.sqrt(2.0 / self.lam)  # of a kink, tanh(τ/width)
        lattice = self._kink_potential(self.n_time)
        refine = max(1, math.ceil(4.0 * self.spacing / width))
        if refine * self.n_time <= MAX_REFINED_SLICES:  # the same path, kinks resolved
            reference = self._kink_potential(refine * self.n_time)
        else:  # kinks far narrower than the spacing, hence isolated: the continuum's
            reference = 0.5 * self.n_kinks * kink_action(self.lam)
        if lattice < MIN_KINK_RESOLUTION * reference:
            raise ValueError(
                f"n_kinks={self.n_kinks} kinks on n_time={self.n_time} slices: the slices miss "
                f"the kinks (width √(2/lam) = {width:.3g}, spacing {self.spacing:.3g}), so "
                f"Σ_t V0(ψ_t), which normalises every activity, is {lattice / reference:.2g} of "
                "its value with the kinks resolved: use more slices, fewer kinks or a smaller lam"
            )

    def _kink_potential(self, slices: int) -> float:
        """a·Σ_t V0(ψ_t) of the input's kink path on ``slices`` slices over the time extent."""
        path = kink_path(slices, self.time_extent, self.lam, self.n_kinks, dtype=torch.float64)
        return float(potential_sum(path, self.lam)) * self.time_extent / slices

    def _check_shift(self) -> None:
        """Refuse explicit moves that cannot change the whole path's level where it is the
        slow mode (short time extents, see ``SHIFT_NEEDED_BELOW``)."""
        scale = self.time_extent * math.sqrt(2.0 * self.lam)
        if self.algorithm != "auto" and scale < SHIFT_NEEDED_BELOW and "shift" not in self.moves:
            raise ValueError(
                f"algorithm={self.algorithm!r} cannot sample this lattice: time_extent·√(2·lam)"
                f" = {scale:.3g} < {SHIFT_NEEDED_BELOW:g}, where the kinetic term holds each "
                "path nearly constant and only a move of the whole path ('shift') changes its "
                "level; add '+shift' or use 'auto'"
            )

    def _check_precision(self) -> None:
        """Refuse a target error or a sweep cap that cannot be used as asked."""
        target = self.target_stderr
        if isinstance(target, bool) or not isinstance(target, int | float):
            raise ValueError(f"target_stderr must be a Python number >= 0 (0: off), got {target!r}")
        if not math.isfinite(target) or target < 0:
            raise ValueError(f"target_stderr must be finite and >= 0 (0: off), got {target!r}")
        check_int("max_sweeps", self.max_sweeps, 0)
        if 0 < self.max_sweeps < self.sweeps:
            raise ValueError(
                f"max_sweeps must be 0 (no extension) or >= sweeps={self.sweeps}, "
                f"got {self.max_sweeps}"
            )
        if target > 0 and self.chains < MIN_CHAINS_FOR_TARGET:
            raise ValueError(
                f"target_stderr needs chains >= {MIN_CHAINS_FOR_TARGET}, got chains="
                f"{self.chains}: the rule stops on the error estimated from the chains, whose "
                "own relative scatter is 1/√(2(chains − 1)), so it stops on its low values "
                "(measured: the true spread was 3.2× the reported error with 3 chains, 1.4× "
                "with 8, 1.07× with 16)"
            )
        if target > 0 and self.max_sweeps <= self.sweeps:
            raise ValueError(
                f"target_stderr={target!r} needs max_sweeps > sweeps={self.sweeps} (the "
                f"measurement may extend to max_sweeps), got max_sweeps={self.max_sweeps}"
            )

    def _check_segment(self) -> None:
        """Refuse explicit bisection levels whose segments no proposal can cross."""
        if self.bisection_levels <= 1 or "multilevel" not in self.moves:
            return
        segment = (2**self.bisection_levels - 1) * self.spacing
        lengths = segment * math.sqrt(2.0 * self.lam)
        if lengths > MAX_SEGMENT_CORRELATION_LENGTHS:
            raise ValueError(
                f"bisection_levels={self.bisection_levels} gives segments of "
                f"{lengths:.3g} correlation lengths 1/√(2·lam) (at most "
                f"{MAX_SEGMENT_CORRELATION_LENGTHS:g}), where bisection moves are rarely "
                "accepted: use fewer levels, a finer lattice, or 0 (automatic)"
            )

    @property
    def moves(self) -> tuple[str, ...]:
        """The moves of one sweep, in the order they are applied (``"auto"`` resolved)."""
        if self.algorithm == "auto":
            omega = math.sqrt(2.0 * self.lam)
            chosen = {"multilevel", "cluster"}
            if self.spacing * omega >= 1.0:
                chosen.add("local")
            if self.time_extent * omega < AUTO_SHIFT_BELOW:
                chosen.add("shift")
            return tuple(m for m in MOVES if m in chosen)
        return tuple(m for m in MOVES if m in self.algorithm.split("+"))

    @property
    def shift_width(self) -> float:
        """Half-width of the ``"shift"`` move's proposals: two standard deviations of the
        path's level in one well, 1/√(2Λ·T), at most 2."""
        return min(2.0, 2.0 / math.sqrt(2.0 * self.lam * self.time_extent))

    @property
    def levels(self) -> int:
        """Bisection levels: ``bisection_levels``, or automatic when 0.

        Segments of 2**levels slices should span about two correlation lengths 1/(ω·a) of
        the oscillation in a well, ω = √(2Λ): level 4 at the paper's lattice.
        """
        if self.bisection_levels:
            return self.bisection_levels
        omega = math.sqrt(2.0 * self.lam)
        best = round(math.log2(max(2.0 / (omega * self.spacing), 2.0)))
        return max(1, min(best, int(math.log2(self.n_time)) - 1))

    @property
    def spacing(self) -> float:
        """Lattice spacing a = time_extent / n_time."""
        return self.time_extent / self.n_time

    def as_state(self) -> dict[str, object]:
        """The fields as plain values (dtype and device as strings), for ``weights_only``
        state dicts; :meth:`from_state` rebuilds the config."""
        fields = dataclasses.asdict(self)
        fields["dtype"] = str(self.dtype).removeprefix("torch.")
        fields["device"] = str(self.device)
        return fields

    @classmethod
    def from_state(cls, state: dict[str, object]) -> SamplerConfig:
        """The config of :meth:`as_state`'s values, validated as when built."""
        fields = dict(state)
        fields["dtype"] = getattr(torch, str(fields["dtype"]))
        return cls(**fields)


def check_int(name: str, value: object, minimum: int) -> None:
    """ValueError naming ``name`` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_number(name: str, value: object, *, float32: bool = False) -> float:
    """``value`` as a float; ValueError naming ``name`` unless an int or float (not a bool),
    finite (also once stored in float32, with ``float32``) and >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (float32 and not math.isfinite(torch.tensor(float(value)).item()))
        or value < 0
    ):
        kind = "finite float32 number" if float32 else "finite number"
        raise ValueError(f"{name} must be a {kind} >= 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; ValueError naming ``name`` otherwise."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


LATTICE_FIELDS = ("n_time", "time_extent", "lam", "n_kinks")
"""The fields of a :class:`SamplerConfig` that define its lattice (and its activities)."""


def check_same_lattice(
    name: str, config: SamplerConfig, reference_name: str, reference: SamplerConfig
) -> None:
    """ValueError naming the first lattice field (:data:`LATTICE_FIELDS`) in which
    ``config`` (called ``name``) differs from ``reference`` (called ``reference_name``)."""
    for field in LATTICE_FIELDS:
        value, expected = getattr(config, field), getattr(reference, field)
        if value != expected:
            raise ValueError(
                f"{name}.{field}={value} must be {reference_name}.{field}={expected}: the "
                "two samplers must simulate the same lattice"
            )
