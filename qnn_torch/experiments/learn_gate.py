"""Learn a paper gate's strengths from its truth table by gradient descent through the sampler
(``qnn_torch.learning``) from a seeded random start, then verify them with the circuits'
validation settings (two starts, 2σ). Prints the learning table and the verdicts; writes
``learn_gate.json`` and ``learn_gate.png`` to --out. Exit status 0 when verification passes.

    qnn-learn-gate [--gate xor] [--seed 0] [--out outputs/learn_gate]
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from qnn_torch import THRESHOLDS, circuits
from qnn_torch.config import SEED_LIMIT, check_int
from qnn_torch.experiments.cli import CommandLine
from qnn_torch.experiments.plotting import new_figure, savefig_atomic
from qnn_torch.io import check_output_folder, clear_outputs, write_atomic
from qnn_torch.learning import (
    INIT_RANGE,
    LEARN_CONFIG,
    VERIFY_CONFIG,
    LearningHistory,
    learn_truth_table,
    random_strengths,
    verify_truth_table,
)

GATES = {  # builder, its strengths, targets for the patterns 00, 01, 10, 11
    "xor": (circuits.xor_gate, ("excite", "inhibit", "output", "cross"), (0, 1, 1, 0)),
    "or": (circuits.or_gate, ("excite", "inhibit", "output"), (0, 1, 1, 1)),
    "and": (circuits.and_gate, ("strength",), (0, 0, 0, 1)),
}


LATTICE = ("n_time", "time_extent", "lam", "n_kinks")
OUTPUTS = ("learn_gate.json", "learn_gate.png", "config.yaml")  # the report: last out


@dataclass(frozen=True)
class GateSettings:
    """Settings of ``qnn-learn-gate`` (the sampler of the learning steps is ``--sampler.*``).

    Attributes:
        gate: The gate to learn: xor, or, and.
        seed: Seed of the random start and of the sampler.
        init_range: Range (low, high) of the log-uniform random start of the strengths.
        steps: Most learning steps.
        lr: Adam's learning rate on the log-strengths.
        stop_after_passing: Stop once this many consecutive steps passed (0: every step).
        verify_sweeps: Thermalisation and measurement sweeps per start of the verification.
        threads: Torch CPU threads (0: PyTorch's default).
        out: Output folder of learn_gate.json and learn_gate.png.
    """

    gate: str = "xor"
    seed: int = 0
    init_range: tuple[float, float] = INIT_RANGE
    steps: int = 60
    lr: float = 0.2
    stop_after_passing: int = 3
    verify_sweeps: int = VERIFY_CONFIG.sweeps
    threads: int = 1
    out: Path = Path("outputs/learn_gate")

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {sorted(GATES)}, got {self.gate!r}")
        check_int("seed", self.seed, 0)
        if self.seed >= SEED_LIMIT:
            raise ValueError(f"seed must be < 2**63, got {self.seed}")
        low, high = self.init_range
        if not 0 < low <= high < math.inf:
            raise ValueError(f"init_range must satisfy 0 < low <= high < inf, got {low}, {high}")
        check_int("steps", self.steps, 1)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        check_int("stop_after_passing", self.stop_after_passing, 0)
        check_int("verify_sweeps", self.verify_sweeps, 1)
        check_int("threads", self.threads, 0)
        check_output_folder(self.out)


COMMAND_LINE = CommandLine(
    GateSettings,
    __doc__.split("\n\n")[0].replace("\n", " "),
    samplers={"sampler": (LEARN_CONFIG, "Sampler of each learning step")},
    renamed={
        f"--{old}": [f"--sampler.{old.replace('-', '_')}"]
        for old in ("n-time", "chains", "thermalization", "sweeps")
    },
)


def plot(history: LearningHistory, path: Path, title: str) -> None:
    """Loss, the patterns' activities (±stderr) and the strengths against step; atomic."""
    fig, axes = new_figure(1, 3, (15, 4))
    loss_ax, act_ax, s_ax = axes[0]
    steps = range(history.steps)
    loss_ax.semilogy(steps, history.loss.clamp_min(1e-6), "k.-")
    loss_ax.set(xlabel="step", ylabel="loss", title=title)
    for p, pattern in enumerate(history.patterns):
        style = "-" if history.targets[p] else "--"
        label = f"{pattern} → {'high' if history.targets[p] else 'low'}"
        act_ax.errorbar(steps, history.activity[:, p], history.stderr[:, p], fmt=f"o{style}",
                        ms=3, label=label)  # fmt: skip
    act_ax.axhspan(THRESHOLDS.low, THRESHOLDS.high, color="0.9", zorder=0, label="undecided")
    for level in (THRESHOLDS.low, THRESHOLDS.high):
        act_ax.axhline(level, color="0.5", lw=0.8)
    act_ax.set(xlabel="step", ylabel="activity of out", title="truth table while learning")
    act_ax.legend(fontsize=8)
    for k, name in enumerate(history.names):
        s_ax.semilogy(steps, history.strengths[:, k], ".-", label=name)
    s_ax.set(xlabel="step", ylabel="strength", title="strengths (learned as log s)")
    s_ax.legend(fontsize=8)
    savefig_atomic(fig, path, dpi=90)


def main(argv: Sequence[str] | None = None) -> int:
    """Learn, verify, print and write; returns 0 when the verification passes, else 1."""
    parsed = COMMAND_LINE.parse(argv)
    args = parsed.settings
    if args.threads:
        torch.set_num_threads(args.threads)
    clear_outputs(args.out, OUTPUTS)
    builder, names, targets = GATES[args.gate]
    learn = replace(parsed.samplers["sampler"], seed=args.seed)
    sweeps = args.verify_sweeps
    lattice = {name: getattr(learn, name) for name in LATTICE}
    verify = replace(VERIFY_CONFIG, **lattice, seed=args.seed, thermalization=sweeps, sweeps=sweeps)
    low, high = args.init_range
    start = random_strengths(names, low=low, high=high, seed=args.seed)
    started = time.perf_counter()
    history = learn_truth_table(builder, targets, initial_strengths=start, config=learn,
                                steps=args.steps, lr=args.lr, progress=True,
                                stop_after_passing=args.stop_after_passing)  # fmt: skip
    learned = time.perf_counter()
    check = verify_truth_table(builder, history.final_strengths, targets, config=verify)
    seconds = {"learning": learned - started, "verification": time.perf_counter() - learned}
    print(history.table())
    print(f"\nverification of the learned strengths ({sweeps} + {sweeps} sweeps × {verify.chains} "
          f"chains × 2 starts, Nt = {verify.n_time}):\n{check.table()}")  # fmt: skip
    print(f"{history.steps} steps in {seconds['learning']:.0f} s, "
          f"verification {seconds['verification']:.0f} s")  # fmt: skip
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report = {"gate": args.gate, "initial_strengths": start, "seconds": seconds,
              "settings": {**settings, **lattice, "chains": learn.chains,
                           "thermalization": learn.thermalization, "sweeps": learn.sweeps},
              "history": history.as_dict(), "verification": check.as_dict()}  # fmt: skip
    title = f"learning {args.gate.upper()} (Nt = {verify.n_time}, seed {args.seed})"
    plot(history, args.out / "learn_gate.png", title)
    write_atomic(args.out / "config.yaml", parsed.config)
    write_atomic(args.out / "learn_gate.json", json.dumps(report, indent=2) + "\n")
    return 0 if check.passed else 1
