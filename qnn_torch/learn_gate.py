"""Learn a paper gate's strengths from its truth table by gradient descent through the sampler
(``qnn_torch.learning``) from a seeded random start, then verify them with the circuits'
validation settings (two starts, 2σ). Prints the learning table and the verdicts; writes
``learn_gate.json`` and ``learn_gate.png`` to --out. Exit status 0 when verification passes.

    python scripts/learn_gate.py [--gate xor] [--seed 0] [--out outputs/learn_gate]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qnn_torch import THRESHOLDS, circuits
from qnn_torch.io import savefig_atomic, write_atomic
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--gate", choices=sorted(GATES), default="xor")
    add("--seed", type=int, default=0, help="random start and sampler seeds")
    add("--init-range", type=float, nargs=2, default=INIT_RANGE, metavar=("LOW", "HIGH"))
    add("--steps", type=int, default=60, help="most learning steps")
    add("--lr", type=float, default=0.2, help="Adam learning rate on log-strengths")
    add("--stop-after-passing", type=int, default=3, help="0: run every step")
    add("--n-time", type=int, default=LEARN_CONFIG.n_time, help="slices (paper: 512)")
    add("--chains", type=int, default=LEARN_CONFIG.chains)
    add("--thermalization", type=int, default=LEARN_CONFIG.thermalization)
    add("--sweeps", type=int, default=LEARN_CONFIG.sweeps, help="per learning step")
    add("--verify-sweeps", type=int, default=VERIFY_CONFIG.sweeps, help="and thermalization")
    add("--threads", type=int, default=1, help="torch CPU threads (0: PyTorch's default)")
    add("--out", type=Path, default=Path("outputs/learn_gate"))
    return parser.parse_args(argv)


def plot(history: LearningHistory, path: Path, title: str) -> None:
    """Loss, the patterns' activities (±stderr) and the strengths against step; atomic."""
    fig = Figure(figsize=(15, 4), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, act_ax, s_ax = fig.subplots(1, 3)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    builder, names, targets = GATES[args.gate]
    n, sweeps = args.n_time, args.verify_sweeps
    learn = replace(LEARN_CONFIG, n_time=n, seed=args.seed, chains=args.chains,
                    thermalization=args.thermalization, sweeps=args.sweeps)  # fmt: skip
    verify = replace(VERIFY_CONFIG, n_time=n, seed=args.seed, thermalization=sweeps, sweeps=sweeps)
    start = random_strengths(names, low=args.init_range[0], high=args.init_range[1], seed=args.seed)
    started = time.perf_counter()
    history = learn_truth_table(builder, targets, initial_strengths=start, config=learn,
                                steps=args.steps, lr=args.lr, progress=True,
                                stop_after_passing=args.stop_after_passing)  # fmt: skip
    learned = time.perf_counter()
    check = verify_truth_table(builder, history.final_strengths, targets, config=verify)
    seconds = {"learning": learned - started, "verification": time.perf_counter() - learned}
    print(history.table())
    print(f"\nverification of the learned strengths ({sweeps} + {sweeps} sweeps × {verify.chains} "
          f"chains × 2 starts, Nt = {n}):\n{check.table()}")  # fmt: skip
    print(f"{history.steps} steps in {seconds['learning']:.0f} s, "
          f"verification {seconds['verification']:.0f} s")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"gate": args.gate, "initial_strengths": start, "seconds": seconds,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "history": history.as_dict(), "verification": check.as_dict()}  # fmt: skip
    write_atomic(args.out / "learn_gate.json", json.dumps(report, indent=2) + "\n")
    title = f"learning {args.gate.upper()} (Nt = {n}, seed {args.seed})"
    plot(history, args.out / "learn_gate.png", title)
    return 0 if check.passed else 1
