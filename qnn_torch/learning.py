"""Learn a circuit's strengths from its truth table by gradient descent through the sampler.

A builder such as :func:`~qnn_torch.circuits.xor_gate` maps input brightnesses and named
strengths to a :class:`~qnn_torch.network.Network`. Each step simulates all P input
patterns as ONE batched network (brightnesses of shape (P,)), scores the output neuron's
activities A (P,) with :func:`truth_table_loss`, and takes an Adam step on the strengths
with the covariance gradient ∂A/∂θ = −Cov(O, ∂S/∂θ) measured in the same run.

Parametrisation: strengths must stay ≥ 0 and span 10³–10⁵, so they are learned in log
space, s_k = exp(u_k), with Adam on u. A step then changes a strength by a factor (Adam's
steps are ≈ lr in u, so ≈ e^{±lr}) whatever its scale, and no strength can reach 0 or turn
negative: no clipping or projection is needed. dL/du_k = s_k·dL/ds_k. Adam runs with
betas (0.5, 0.9), not (0.9, 0.999): the gradient's scale falls by orders of magnitude during a
run, and with β2 = 0.999 the first large gradients dominate the second moment for hundreds
of steps, so that later steps shrink and lag behind sign changes (measured: a run kept
lowering ``excite`` for 12 steps against its gradient's sign and stalled).

:func:`verify_truth_table` re-measures learned strengths with the settings with which the
paper's circuits were validated (:data:`VERIFY_CONFIG`, chains pooled from two starts) and
judges every pattern with :meth:`~qnn_torch.circuits.Thresholds.state` at 2σ.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from qnn_torch.autograd import grad_with_stderr
from qnn_torch.circuits import THRESHOLDS, Thresholds, truth_table_inputs
from qnn_torch.config import SamplerConfig, check_int
from qnn_torch.network import Network
from qnn_torch.simulate import simulate
from qnn_torch.starts import STARTS, VALIDATION_CONFIG, VALIDATION_MOVES, simulate_from_starts

Builder = Callable[..., Network]
"""``builder(*inputs, **strengths) -> Network``, e.g. :func:`~qnn_torch.circuits.xor_gate`."""

MOVES = VALIDATION_MOVES
"""The moves with which the paper's circuits were validated (every move, every sweep)."""

LEARN_CONFIG = SamplerConfig(chains=8, thermalization=100, sweeps=200, **MOVES)
"""Per-step sampling while learning, at the paper's lattice: a cheap, noisy gradient."""

VERIFY_CONFIG = VALIDATION_CONFIG
"""The paper circuits' validation settings (:data:`qnn_torch.starts.VALIDATION_CONFIG`),
per start; :func:`verify_truth_table` pools the chains of :data:`STARTS`."""

XOR_TARGETS = (0, 1, 1, 0)
"""XOR's outputs for the patterns of :data:`~qnn_torch.circuits.TRUTH_TABLE`."""

XOR_STRENGTHS = ("excite", "inhibit", "output", "cross")
"""The strengths of :func:`~qnn_torch.circuits.xor_gate`."""

INIT_RANGE = (1e3, 1e5)
"""Default range of :func:`random_strengths` (log-uniform): the scales of the paper's links."""


@dataclass(frozen=True)
class LearningHistory:
    """Per-step record of :func:`learn_truth_table` (S steps, P patterns, K strengths).

    Row s holds what step s measured at the strengths it evaluated: loss (S,), activity
    and stderr (S, P) of the output neuron, strengths (S, K), and the gradient of the loss
    with respect to u = log s with its jackknife error over chains, grad and grad_stderr
    (S, K); seconds (S,) is each step's wall time. ``final_strengths`` are the strengths
    after the last step: the last evaluated ones when ``stopped_early`` (the run passed),
    else those after the last Adam update.
    """

    names: tuple[str, ...]
    patterns: tuple[str, ...]
    targets: tuple[int, ...]
    loss: Tensor
    activity: Tensor
    stderr: Tensor
    strengths: Tensor
    grad: Tensor
    grad_stderr: Tensor
    seconds: Tensor
    final_strengths: dict[str, float]
    stopped_early: bool

    @property
    def steps(self) -> int:
        """Number of steps taken (simulations run)."""
        return int(self.loss.shape[0])

    def as_dict(self) -> dict:
        """JSON-ready lists and numbers."""
        return {
            "names": list(self.names),
            "patterns": list(self.patterns),
            "targets": list(self.targets),
            "steps": self.steps,
            "stopped_early": self.stopped_early,
            "final_strengths": self.final_strengths,
            **{
                key: getattr(self, key).tolist()
                for key in ("loss", "activity", "stderr", "strengths", "grad", "grad_stderr")
            },
            "seconds": self.seconds.tolist(),
        }

    def table(self) -> str:
        """One line per step: step, loss, activity ± stderr of each pattern, strengths."""
        head = "  ".join(
            f"{p + ('↑' if t else '↓'):>14}"
            for p, t in zip(self.patterns, self.targets, strict=True)
        )
        lines = [f"{'step':>4} {'loss':>8}  {head}  strengths ({', '.join(self.names)})"]
        for s in range(self.steps):
            cells = "  ".join(
                f"{float(a):6.3f} ± {float(e):.3f}"
                for a, e in zip(self.activity[s], self.stderr[s], strict=True)
            )
            values = " ".join(f"{float(v):7.0f}" for v in self.strengths[s])
            lines.append(f"{s:>4} {float(self.loss[s]):8.4f}  {cells}  {values}")
        return "\n".join(lines)


@dataclass(frozen=True)
class TruthTableCheck:
    """Verdict of :func:`verify_truth_table` (P patterns): activity and stderr (P,) of the
    output, states per pattern ("high", "low", "undecided"), whether every state matches its
    target, and the largest gap between the starts' means in standard errors."""

    patterns: tuple[str, ...]
    targets: tuple[int, ...]
    activity: Tensor
    stderr: Tensor
    states: tuple[str, ...]
    passed: bool
    start_gap_sigma: float
    strengths: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        """One line per pattern: activity ± stderr, wanted state, measured state, verdict."""
        lines = []
        for p, t, a, e, state in zip(
            self.patterns, self.targets, self.activity, self.stderr, self.states, strict=True
        ):
            want = "high" if t else "low"
            verdict = "ok" if state == want else "FAIL"
            lines.append(
                f"{p}: {float(a):.3f} ± {float(e):.4f}  want {want:4}  {state:9}  {verdict}"
            )
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"{verdict} (largest gap between the starts {self.start_gap_sigma:.1f}σ)")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """JSON-ready: {pattern: {target, activity, stderr, state}} plus the verdict."""
        return {
            "passed": self.passed,
            "start_gap_sigma": self.start_gap_sigma,
            "strengths": self.strengths,
            "patterns": {
                p: {
                    "target": "high" if t else "low",
                    "activity": float(a),
                    "stderr": float(e),
                    "state": s,
                }
                for p, t, a, e, s in zip(
                    self.patterns,
                    self.targets,
                    self.activity,
                    self.stderr,
                    self.states,
                    strict=True,
                )
            },
        }


# -- pieces ----------------------------------------------------------------------------
def random_strengths(
    names: Sequence[str], *, low: float = INIT_RANGE[0], high: float = INIT_RANGE[1], seed: int = 0
) -> dict[str, float]:
    """Strengths drawn log-uniformly in [low, high]: s = exp(U(log low, log high)), seeded."""
    if not names or len(set(names)) != len(names):
        raise ValueError(f"names must be distinct and not empty, got {list(names)!r}")
    if not (0 < low <= high < math.inf):
        raise ValueError(f"need 0 < low <= high < inf, got low={low!r}, high={high!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    u = torch.empty(len(names), dtype=torch.float64).uniform_(
        math.log(low), math.log(high), generator=generator
    )
    return {name: float(v) for name, v in zip(names, u.exp(), strict=True)}


def truth_table_loss(
    activity: Tensor, targets: Tensor, *, levels: tuple[float, float] = (0.15, 1.0)
) -> Tensor:
    """One-sided squared error of activities (P,) against 0/1 targets (P,); a 0-d tensor.

    With levels (y0, y1):  L = (1/P)·Σ_p [t_p·relu(y1 − A_p)² + (1 − t_p)·relu(A_p − y0)²]

    a squared hinge that pulls high patterns up to y1 and low ones down to y0 and ignores
    overshoot beyond them. The defaults lie well beyond the thresholds (0.4 above high, 0.25
    below low, just above the undriven baseline 0.13), so a low pattern that rises above the
    baseline already has a gradient; (0.3, 0.7) is the plain hinge with margin 0.1.
    """
    t = targets.to(activity)
    low, high = levels
    return (
        t * torch.relu(high - activity).square() + (1 - t) * torch.relu(activity - low).square()
    ).mean()


def truth_table_states(
    activity: Tensor, stderr: Tensor, *, thresholds: Thresholds = THRESHOLDS, sigmas: float = 2.0
) -> tuple[str, ...]:
    """:meth:`Thresholds.state` of each pattern: activity and stderr (P,)."""
    return tuple(
        thresholds.state(float(a), float(e), sigmas) for a, e in zip(activity, stderr, strict=True)
    )


def passes(states: Sequence[str], targets: Sequence[int]) -> bool:
    """Every state is "high" where its target is 1 and "low" where it is 0."""
    return all(s == ("high" if t else "low") for s, t in zip(states, targets, strict=True))


def pattern_names(inputs: Sequence[Tensor]) -> tuple[str, ...]:
    """Labels of the P patterns of ``inputs`` (each (P,)): "01" for a = 0, b = 1."""
    values = torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in inputs], -1)
    return tuple("".join(f"{float(v):g}" for v in row) for row in values)


# -- learning --------------------------------------------------------------------------
def learn_truth_table(
    builder: Builder,
    targets: Sequence[int],
    *,
    initial_strengths: Mapping[str, float],
    inputs: Sequence[Tensor] | None = None,
    output: str = "out",
    config: SamplerConfig = LEARN_CONFIG,
    steps: int = 60,
    lr: float = 0.2,
    betas: tuple[float, float] = (0.5, 0.9),
    levels: tuple[float, float] = (0.15, 1.0),
    stop_after_passing: int = 0,
    thresholds: Thresholds = THRESHOLDS,
    progress: bool = False,
) -> LearningHistory:
    """Fit the named strengths of ``builder`` so that ``output`` follows ``targets``.

    ``inputs`` are the brightnesses (each (P,), default
    :func:`~qnn_torch.circuits.truth_table_inputs`), ``targets`` the P wanted outputs (1:
    high, 0: low). Step s builds ``builder(*inputs, **{k: exp(u_k)})``, simulates the P
    patterns in one batch with ``config`` and seed ``config.seed + s``, evaluates
    :func:`truth_table_loss` with ``levels`` and applies Adam(lr) to u = log s (module
    doc). With ``stop_after_passing`` = n > 0 the run stops, before updating, once the
    step's own estimates have passed the truth table at 2σ (:func:`truth_table_states`) at
    n consecutive steps. Raises ValueError naming a bad argument.
    """
    inputs = truth_table_inputs() if inputs is None else tuple(inputs)
    target = _check_targets(targets, inputs)
    _check_strengths("initial_strengths", initial_strengths, positive=True)
    if not isinstance(config, SamplerConfig):
        raise ValueError(f"config must be a SamplerConfig, got {type(config).__name__}")
    check_int("steps", steps, 1)
    check_int("stop_after_passing", stop_after_passing, 0)
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ValueError(f"lr must be > 0 and finite, got {lr!r}")
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
        raise ValueError(f"betas must lie in [0, 1), got {tuple(betas)!r}")
    if (
        len(levels) != 2
        or not all(isinstance(v, (int, float)) for v in levels)
        or not (0 <= levels[0] < thresholds.low and thresholds.high < levels[1] < math.inf)
    ):
        raise ValueError(
            f"levels must be (low, high) with 0 <= low < {thresholds.low} and "
            f"{thresholds.high} < high < inf, got {levels!r}"
        )
    names = tuple(initial_strengths)

    u = torch.tensor([math.log(initial_strengths[n]) for n in names], dtype=torch.float64)
    u.requires_grad_(True)
    optimizer = torch.optim.Adam([u], lr=lr, betas=betas)
    rows: dict[str, list] = {k: [] for k in ("loss", "act", "err", "s", "g", "ge", "sec")}
    streak, stopped = 0, False
    bar = tqdm(range(steps), desc="learning", disable=not progress)
    for step in bar:
        start = time.perf_counter()
        strengths = u.exp()
        network = builder(*inputs, **{n: strengths[k] for k, n in enumerate(names)})
        _check_output(network, output)
        result = simulate(network, replace(config, seed=config.seed + step))
        activity, stderr = result.activity[output], result.stderr[output]
        if activity.shape != target.shape:
            raise ValueError(
                f"the network's batch shape {tuple(activity.shape)} must be (P,) = "
                f"{tuple(target.shape)}: one network per pattern"
            )
        loss = truth_table_loss(activity, target, levels=levels)
        (grad,), (grad_err,) = grad_with_stderr(loss, u)
        for key, value in zip(
            ("loss", "act", "err", "s", "g", "ge"),
            (loss, activity, stderr, strengths, grad, grad_err),
            strict=True,
        ):
            rows[key].append(value.detach().clone())
        states = truth_table_states(activity.detach(), stderr, thresholds=thresholds)
        ok = passes(states, target.tolist())
        streak = streak + 1 if ok else 0
        bar.set_postfix(loss=f"{loss.item():.4f}", passing=streak)
        if stop_after_passing and streak >= stop_after_passing:
            rows["sec"].append(time.perf_counter() - start)
            stopped = True
            break
        optimizer.zero_grad()
        u.grad = grad
        optimizer.step()
        rows["sec"].append(time.perf_counter() - start)
    bar.close()
    final = rows["s"][-1] if stopped else u.detach().exp()
    return LearningHistory(
        names=names,
        patterns=pattern_names(inputs),
        targets=tuple(int(t) for t in target),
        loss=torch.stack(rows["loss"]),
        activity=torch.stack(rows["act"]),
        stderr=torch.stack(rows["err"]),
        strengths=torch.stack(rows["s"]),
        grad=torch.stack(rows["g"]),
        grad_stderr=torch.stack(rows["ge"]),
        seconds=torch.tensor(rows["sec"], dtype=torch.float64),
        final_strengths={n: float(final[k]) for k, n in enumerate(names)},
        stopped_early=stopped,
    )


def verify_truth_table(
    builder: Builder,
    strengths: Mapping[str, float],
    targets: Sequence[int],
    *,
    inputs: Sequence[Tensor] | None = None,
    output: str = "out",
    config: SamplerConfig = VERIFY_CONFIG,
    starts: Sequence[str] = STARTS,
    thresholds: Thresholds = THRESHOLDS,
    sigmas: float = 2.0,
) -> TruthTableCheck:
    """Measure ``builder(*inputs, **strengths)`` and judge each pattern at ``sigmas``.

    Simulates once per start (``config`` with init = start, seed = config.seed + i) and
    pools the chains of all starts, as the circuits' validation does, so that a start the
    run has not forgotten shows up in the standard error; activity and stderr (P,).
    """
    inputs = truth_table_inputs() if inputs is None else tuple(inputs)
    target = _check_targets(targets, inputs)
    _check_strengths("strengths", strengths, positive=False)
    network = builder(*inputs, **{k: float(v) for k, v in strengths.items()})
    _check_output(network, output)
    pooled = simulate_from_starts(network, config, starts)
    index = pooled.names.index(output)
    activity, stderr = pooled.activity[..., index], pooled.stderr[..., index]  # (P,)
    if activity.shape != target.shape:
        raise ValueError(
            f"the network's batch shape {tuple(activity.shape)} must be (P,) = "
            f"{tuple(target.shape)}: one network per pattern"
        )
    gap = float(pooled.start_gap_sigma[..., index].max())
    states = truth_table_states(activity, stderr, thresholds=thresholds, sigmas=sigmas)
    return TruthTableCheck(
        patterns=pattern_names(inputs),
        targets=tuple(int(t) for t in target),
        activity=activity,
        stderr=stderr,
        states=states,
        passed=passes(states, target.tolist()),
        start_gap_sigma=round(gap, 2),
        strengths={k: float(v) for k, v in strengths.items()},
    )


def _check_targets(targets: Sequence[int], inputs: Sequence[Tensor]) -> Tensor:
    """Targets as a float64 (P,) tensor of 0/1, P the number of input patterns."""
    if not inputs:
        raise ValueError("inputs must hold at least one brightness tensor, got ()")
    shapes = {tuple(torch.as_tensor(x).shape) for x in inputs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"inputs must all have the same shape (P,), got shapes {sorted(shapes)}")
    target = torch.as_tensor(list(targets), dtype=torch.float64)
    (patterns,) = shapes.pop()
    if target.shape != (patterns,) or not ((target == 0) | (target == 1)).all():
        raise ValueError(f"targets must be {patterns} values of 0 or 1, got {list(targets)!r}")
    return target


def _check_output(network: Network, output: str) -> None:
    if output not in network.neurons:
        raise ValueError(
            f"output must name a simulated neuron of the network {network.neurons}, got {output!r}"
        )


def _check_strengths(argument: str, strengths: Mapping[str, float], *, positive: bool) -> None:
    """Named strengths: at least one, each a finite number > 0 (``positive``) or >= 0."""
    if not isinstance(strengths, Mapping) or not strengths:
        raise ValueError(f"{argument} must name at least one strength, got {strengths!r}")
    for name, value in strengths.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{argument}[{name!r}] must be a number, got {value!r}")
        if not (0 < value < math.inf if positive else 0 <= value < math.inf):
            bound = "> 0 and finite (s = exp(u))" if positive else ">= 0 and finite"
            raise ValueError(f"{argument}[{name!r}] must be {bound}, got {value!r}")
