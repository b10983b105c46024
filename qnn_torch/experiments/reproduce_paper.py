"""Reproduce the circuits of Dorozhinsky & Pavlovsky (arXiv:1806.09664): figures and tables.

Runs every experiment, or those named by ``--only``, as batched simulations (a sweep over a
strength or over input patterns is one batch), writes one PNG per figure (named after the
paper's figure numbers), ``results.json`` and ``results.md`` into ``--out``, and prints the
markdown tables. ``--quick`` runs a coarser lattice (Nt = 128) and shorter chains with the
same schema, for CI. Every measurement pools chains from two starts, the vacuum and the
paper's saw, so that a start the run has not forgotten shows up in the standard error.

    qnn-reproduce-paper [--quick] [--only and or ...] [--out outputs/paper]

The exit status is 0 when every stated behaviour holds (see ``checks`` in results.json).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from qnn_torch import SamplerConfig, circuits
from qnn_torch.config import SEED_LIMIT, check_int
from qnn_torch.experiments.cli import CommandLine, check_device
from qnn_torch.experiments.plotting import blank_figure, new_figure, savefig_atomic
from qnn_torch.functional.exact import single_neuron_activity
from qnn_torch.functional.physics import (
    action_density,
    double_well,
    kink_action,
    kink_path,
)
from qnn_torch.io import check_output_folder, clear_outputs, write_atomic
from qnn_torch.network import Network
from qnn_torch.starts import STARTS, VALIDATION_CONFIG, VALIDATION_MOVES, simulate_from_starts

EXPERIMENTS = ("neuron", "relay", "chain", "and", "not", "or", "xor", "detector")
FIGURES = (
    "fig01_instanton_action.png",
    "fig02_free_path.png",
    "fig04_relay_potential.png",
    "fig05_relay_activity.png",
    "fig07_chain_k.png",
    "fig08_chain_lambda.png",
    "fig10_11_and.png",
    "fig13_14_not.png",
    "fig15_17_or.png",
    "fig16_18_xor.png",
    "fig19_20_detector.png",
)
OUTPUTS = ("results.json", "results.md", "config.yaml", *FIGURES)  # results.json: last out
PATTERN_SEED = 1806  # the random detector patterns are a fixed test set, whatever --seed
PAPER_RELAY = (6000.0, 0.92)  # the paper's relay activity at ε = 6000
CHAIN_LAMBDA_K = 1.5  # k of the chain-against-Λ sweep (Fig. 8)
DPI = 90
Results = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """Lattice and Monte Carlo settings (per start) and the sweep grids of a run."""

    config: SamplerConfig
    relay_strengths: tuple[float, ...]
    chain_k: tuple[float, ...]
    chain_lams: tuple[float, ...]
    gate_k: tuple[float, ...]
    not_k: tuple[float, ...]
    grey: tuple[float, ...]


FULL = Settings(
    config=VALIDATION_CONFIG,
    relay_strengths=tuple(500.0 * i for i in range(25)),
    chain_k=tuple(sorted({round(0.1 * i, 1) for i in range(21)} | {0.95, 1.05})),
    chain_lams=(3000.0, 4000.0, 5000.0, 6000.0, 7000.0, 7500.0, 8000.0, 9000.0, 10000.0),
    gate_k=tuple(round(0.1 * i, 1) for i in range(21)),
    not_k=(0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0),
    grey=(0.0, 0.25, 0.5, 0.75, 1.0),
)
QUICK = Settings(
    config=SamplerConfig(n_time=128, chains=4, thermalization=400, sweeps=400, **VALIDATION_MOVES),
    relay_strengths=tuple(1500.0 * i for i in range(9)),
    chain_k=(0.0, 0.5, 0.8, 0.9, 1.2, 1.5, 2.0),
    chain_lams=(3000.0, 5000.0, 8000.0),
    gate_k=(0.0, 0.5, 1.0, 1.5, 2.0),
    not_k=(0.0, 0.05, 0.2, 1.0),
    grey=(0.0, 0.5, 1.0),
)


@dataclass(frozen=True)
class Measurement:
    """Activities of a batched network, pooled over the chains of both starts, by name.

    ``activity`` and ``stderr`` have the network's batch shape; ``paths`` (*batch, 2C, N, Nt)
    are the final paths and ``profile`` (*batch, N, Nt) the mean ⟨V0(φ_{n,t})⟩ if recorded.
    """

    activity: dict[str, Tensor]
    stderr: dict[str, Tensor]
    paths: Tensor
    profile: Tensor | None


class Runner:
    """Simulates networks with one configuration and keeps equilibration diagnostics."""

    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self.diagnostics: dict[str, dict[str, float]] = {}
        self.experiment = ""

    def measure(
        self, network: Network, *, lam: float | None = None, record_profile: bool = False
    ) -> Measurement:
        """Simulate ``network`` from both starts and pool their chains.

        Records, per experiment, the largest autocorrelation time (in sweeps) and the
        largest gap between the two starts' means in units of its standard error.
        """
        config = self.config if lam is None else replace(self.config, lam=lam)
        pooled = simulate_from_starts(network, config, STARTS, record_profile=record_profile)
        runs = pooled.runs
        tau = max(
            float(torch.as_tensor(t).max()) for r in runs for t in r.autocorrelation_time.values()
        )
        gap = pooled.start_gap_sigma
        stats = self.diagnostics.setdefault(
            self.experiment, {"max_autocorrelation_sweeps": 0.0, "max_start_gap_sigma": 0.0}
        )
        stats["max_autocorrelation_sweeps"] = max(
            stats["max_autocorrelation_sweeps"], round(tau, 1)
        )
        stats["max_start_gap_sigma"] = max(stats["max_start_gap_sigma"], round(float(gap.max()), 2))
        profile = None
        if record_profile:
            profile = torch.stack([run.potential_profile.cpu() for run in runs]).mean(0)
        return Measurement(
            activity={n: pooled.activity[..., i] for i, n in enumerate(pooled.names)},
            stderr={n: pooled.stderr[..., i] for i, n in enumerate(pooled.names)},
            paths=torch.cat([run.paths.cpu() for run in runs], dim=-3),
            profile=profile,
        )


# -- helpers ----------------------------------------------------------------------------
def pair(activity: Tensor | float, stderr: Tensor | float) -> dict[str, float]:
    """{activity, stderr} as rounded floats."""
    return {"activity": round(float(activity), 5), "stderr": round(float(stderr), 5)}


def floats(values: Tensor | Sequence[float]) -> list[float]:
    return [round(float(v), 5) for v in torch.as_tensor(values).flatten()]


def index_of(grid: Sequence[float], value: float) -> int:
    """Index of the grid point nearest to ``value``."""
    return min(range(len(grid)), key=lambda i: abs(grid[i] - value))


def input_path(config: SamplerConfig) -> Tensor:
    return kink_path(
        config.n_time, config.time_extent, config.lam, config.n_kinks, dtype=torch.float64
    )


def exact_activity(config: SamplerConfig, drive: Tensor) -> Tensor:
    """Exact activity (transfer matrices) of one neuron driven by active inputs: drive (...)."""
    values, inverse = drive.double().unique(return_inverse=True)
    activity = single_neuron_activity(
        values, None, input_path(config), time_extent=config.time_extent, lam=config.lam
    )
    return activity[inverse]


def save(fig: Figure, out: Path, name: str) -> str:
    savefig_atomic(fig, out / name, dpi=DPI)
    return name


def threshold_lines(ax: Any) -> None:
    t = circuits.THRESHOLDS
    ax.axhspan(t.low, t.high, color="0.9", zorder=0, label=f"undecided ({t.low}–{t.high})")


def lattice_label(config: SamplerConfig) -> str:
    return f"Λ = {config.lam:g}, T = {config.time_extent:g}, Nt = {config.n_time}"


def truth_entries(activity: Tensor, stderr: Tensor) -> dict[str, dict[str, float]]:
    """{pattern: {activity, stderr}} from (4,) tensors ordered as TRUTH_TABLE."""
    return {p: pair(activity[i], stderr[i]) for i, p in enumerate(circuits.TRUTH_TABLE)}


# -- experiments ------------------------------------------------------------------------
def run_neuron(runner: Runner, settings: Settings, out: Path) -> tuple[Results, list[str]]:
    """Fig. 1: action density of the input's instantons; Fig. 2: a free thermalised path."""
    config = runner.config
    path = input_path(config)
    density = action_density(path, config.spacing, config.lam)
    per_kink = float(config.spacing * density.sum()) / config.n_kinks
    tau = torch.arange(config.n_time) * config.spacing
    fig, ax = new_figure()
    ax = ax[0, 0]
    ax.plot(tau, density, color="C3")
    ax.set(
        xlabel="τ",
        ylabel="action density s(τ)",
        title="Fig. 1: action density of instantons\n"
        f"action per kink {per_kink:.1f} (continuum 2√(2Λ)/3 = {kink_action(config.lam):.1f})",
    )
    twin = ax.twinx()
    twin.plot(tau, path, color="k", lw=0.8, ls="--")
    twin.set_ylabel("input path ψ(τ)")
    figures = [save(fig, out, "fig01_instanton_action.png")]

    free = runner.measure(Network().add_neuron("free"))
    fig, ax = new_figure()
    ax = ax[0, 0]
    chains = free.paths.shape[0] // len(STARTS)
    for i, start in enumerate(STARTS):
        ax.plot(tau, free.paths[i * chains, 0], lw=0.8, label=f"{start} start")
    ax.set(
        xlabel="τ",
        ylabel="φ(τ)",
        ylim=(-1.6, 1.6),
        title=f"Fig. 2: thermalised path of a free neuron\n{lattice_label(config)}",
    )
    ax.legend(loc="lower right")
    figures.append(save(fig, out, "fig02_free_path.png"))
    return {
        "neuron": {
            "kink_action": {"lattice": round(per_kink, 3), "continuum": kink_action(config.lam)},
            "baseline": pair(free.activity["free"], free.stderr["free"]),
        }
    }, figures


def run_relay(runner: Runner, settings: Settings, out: Path) -> tuple[Results, list[str]]:
    """Fig. 4: potential energy of input and neuron over τ; Fig. 5: activity against ε."""
    config = runner.config
    grid = settings.relay_strengths
    strengths = torch.tensor(grid)
    m = runner.measure(circuits.relay(strengths), record_profile=True)
    exact = exact_activity(config, strengths)
    tau = torch.arange(config.n_time) * config.spacing
    fig, ax = new_figure()
    ax = ax[0, 0]
    ax.plot(tau, double_well(input_path(config), config.lam), "k--", label="input V0(ψ)")
    for value in (3000.0, PAPER_RELAY[0], 8000.0):
        i = index_of(grid, value)
        ax.plot(tau, m.profile[i, 0], label=f"neuron ⟨V0(φ)⟩, ε = {grid[i]:g}")
    ax.set(xlabel="τ", ylabel="potential energy", title="Fig. 4: relay, potential energy over τ")
    ax.set_ylim(top=1.4 * ax.get_ylim()[1])
    ax.legend(loc="upper center", ncols=2, fontsize="small")
    figures = [save(fig, out, "fig04_relay_potential.png")]

    fig, ax = new_figure()
    ax = ax[0, 0]
    threshold_lines(ax)
    ax.axvspan(3000, 8000, color="C2", alpha=0.08, label="paper's workable range")
    ax.plot(strengths, exact, "k-", lw=1, label="exact (transfer matrix)")
    ax.errorbar(
        strengths, m.activity["y"], 2 * m.stderr["y"], fmt="o", ms=3, label="Monte Carlo ±2σ"
    )
    ax.plot(*PAPER_RELAY, "r*", ms=10, label="paper (ε = 6000)")
    ax.set(
        xlabel="ε_exc", ylabel="activity", title=f"Fig. 5: relay activity ({lattice_label(config)})"
    )
    ax.legend(fontsize="small")
    figures.append(save(fig, out, "fig05_relay_activity.png"))
    return {
        "relay": {
            "strength": floats(strengths),
            "activity": floats(m.activity["y"]),
            "stderr": floats(m.stderr["y"]),
            "exact": floats(exact),
            "paper": {"strength": PAPER_RELAY[0], "activity": PAPER_RELAY[1]},
        }
    }, figures


def run_chain(runner: Runner, settings: Settings, out: Path) -> tuple[Results, list[str]]:
    """Fig. 7: activities of a 3-neuron chain against k; Fig. 8: neuron 3 against Λ."""
    config = runner.config
    grid = settings.chain_k
    k = torch.tensor(grid)
    m = runner.measure(circuits.chain(k))
    base = index_of(grid, 0.0)
    baseline = pair(m.activity["n3"][base], m.stderr["n3"][base])
    fig, ax = new_figure()
    ax = ax[0, 0]
    threshold_lines(ax)
    for name in ("n1", "n2", "n3"):
        ax.errorbar(
            k, m.activity[name], 2 * m.stderr[name], fmt="o-", ms=3, label=f"neuron {name[1]}"
        )
    ax.axhline(baseline["activity"], color="k", ls=":", label="undriven baseline")
    ax.axvline(circuits.CHAIN_CRITICAL_K, color="r", ls="--", lw=0.8, label="critical k")
    ax.set(
        xlabel="k  (ε = k·(1.5, 1.0, 0.5)·10⁴)",
        ylabel="activity",
        title=f"Fig. 7: chain input → 1 → 2 → 3 ({lattice_label(config)})",
    )
    ax.legend(fontsize="small")
    figures = [save(fig, out, "fig07_chain_k.png")]

    pairs = torch.tensor([0.0, CHAIN_LAMBDA_K])
    lam_runs = [runner.measure(circuits.chain(pairs), lam=lam) for lam in settings.chain_lams]
    n3 = torch.stack([r.activity["n3"] for r in lam_runs])  # (L, 2): undriven, driven
    n3_err = torch.stack([r.stderr["n3"] for r in lam_runs])
    fig, ax = new_figure()
    ax = ax[0, 0]
    threshold_lines(ax)
    lams = torch.tensor(settings.chain_lams)
    ax.errorbar(
        lams, n3[:, 1], 2 * n3_err[:, 1], fmt="o-", ms=3, label=f"neuron 3, k = {CHAIN_LAMBDA_K}"
    )
    ax.errorbar(lams, n3[:, 0], 2 * n3_err[:, 0], fmt="k:", label="undriven baseline")
    ax.set(
        xlabel="Λ",
        ylabel="activity",
        title=f"Fig. 8: chain against Λ (T = {config.time_extent:g}, Nt = {config.n_time})",
    )
    ax.legend(fontsize="small")
    figures.append(save(fig, out, "fig08_chain_lambda.png"))
    return {
        "chain": {
            "k": floats(k),
            "activity": floats(m.activity["n3"]),
            "stderr": floats(m.stderr["n3"]),
            "baseline": baseline["activity"],
            "baseline_stderr": baseline["stderr"],
            "critical_k": circuits.CHAIN_CRITICAL_K,
            "strengths": list(circuits.CHAIN_STRENGTHS),
            "neurons": {
                n: {"activity": floats(m.activity[n]), "stderr": floats(m.stderr[n])}
                for n in ("n1", "n2")
            },
            "lambda": {
                "k": CHAIN_LAMBDA_K,
                "lam": floats(lams),
                "activity": floats(n3[:, 1]),
                "stderr": floats(n3_err[:, 1]),
                "baseline": floats(n3[:, 0]),
            },
        }
    }, figures


def run_and(runner: Runner, settings: Settings, out: Path) -> tuple[Results, list[str]]:
    """Fig. 10–11: AND output against k for every input pattern; truth table at k = 1."""
    config = runner.config
    grid = settings.gate_k
    k = torch.tensor(grid)
    a, b = circuits.truth_table_inputs()
    m = runner.measure(circuits.and_gate(a[:, None], b[:, None], k=k))  # batch (4, K)
    exact = exact_activity(config, circuits.AND_STRENGTH * (a[:, None] + k * b[:, None]))
    fig, ax = new_figure()
    ax = ax[0, 0]
    threshold_lines(ax)
    for i, pattern in enumerate(circuits.TRUTH_TABLE):
        line = ax.errorbar(
            k, m.activity["out"][i], 2 * m.stderr["out"][i], fmt="o", ms=3, label=f"ab = {pattern}"
        )
        ax.plot(k, exact[i], color=line[0].get_color(), lw=0.8)
    ax.set(
        xlabel="k  (ε1 = ε̂, ε2 = k·ε̂)",
        ylabel="activity of the output",
        title=f"Fig. 10–11: AND, ε̂ = {circuits.AND_STRENGTH:g} (lines: exact)",
    )
    ax.legend(fontsize="small")
    one = index_of(grid, 1.0)
    return {
        "gates": {"AND": truth_entries(m.activity["out"][:, one], m.stderr["out"][:, one])},
        "and": {
            "strength": circuits.AND_STRENGTH,
            "k": floats(k),
            "activity": {
                p: floats(m.activity["out"][i]) for i, p in enumerate(circuits.TRUTH_TABLE)
            },
            "stderr": {p: floats(m.stderr["out"][i]) for i, p in enumerate(circuits.TRUTH_TABLE)},
            "exact_at_k1": dict(zip(circuits.TRUTH_TABLE, floats(exact[:, one]), strict=True)),
        },
    }, [save(fig, out, "fig10_11_and.png")]


def run_not(runner: Runner, settings: Settings, out: Path) -> tuple[Results, list[str]]:
    """Fig. 13–14: activities of neurons 1 and 2 against the inhibition k."""
    grid = settings.not_k
    k = torch.tensor(grid)
    m = runner.measure(circuits.not_gate(k))
    fig, ax = new_figure()
    ax = ax[0, 0]
    threshold_lines(ax)
    for name, strength in (("n1", circuits.NOT_STRONG), ("n2", circuits.NOT_WEAK)):
        ax.errorbar(
            k,
            m.activity[name],
            2 * m.stderr[name],
            fmt="o-",
            ms=3,
            label=f"neuron {name[1]} (ε = {strength:g})",
        )
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set(
        xlabel=f"k  (ε_inh = k·{circuits.NOT_INHIBITION:g})",
        ylabel="activity",
        title="Fig. 13–14: NOT, neuron 2 against the inhibition",
    )
    ax.legend(fontsize="small")
    off, on = index_of(grid, 0.0), index_of(grid, 1.0)
    return {
        "not": {
            "inhibition_off": pair(m.activity["n2"][off], m.stderr["n2"][off]),
            "inhibition_on": pair(m.activity["n2"][on], m.stderr["n2"][on]),
            "k": floats(k),
            "neurons": {
                n: {"activity": floats(m.activity[n]), "stderr": floats(m.stderr[n])}
                for n in ("n1", "n2")
            },
        }
    }, [save(fig, out, "fig13_14_not.png")]


def run_two_input(
    gate: str, builder: Callable[..., Network], figure: str, title: str
) -> Callable[[Runner, Settings, Path], tuple[Results, list[str]]]:
    """An experiment for OR or XOR: output over a grid of grey brightnesses (a, b)."""

    def run(runner: Runner, settings: Settings, out: Path) -> tuple[Results, list[str]]:
        grey = torch.tensor(settings.grey)
        m = runner.measure(builder(grey[:, None], grey[None, :]))  # batch (G, G)
        act, err = m.activity["out"], m.stderr["out"]
        fig, ax = new_figure(1, 2, (10.0, 3.8))
        image = ax[0, 0].imshow(
            act, origin="lower", cmap="viridis", extent=(-0.5, len(grey) - 0.5) * 2
        )
        middle = 0.5 * float(act.min() + act.max())
        for i in range(len(grey)):
            for j in range(len(grey)):
                color = "k" if act[i, j] > middle else "w"
                ax[0, 0].text(j, i, f"{act[i, j]:.2f}", ha="center", va="center", color=color)
        labels = [f"{g:g}" for g in grey.tolist()]
        ax[0, 0].set_xticks(range(len(grey)), labels)
        ax[0, 0].set_yticks(range(len(grey)), labels)
        ax[0, 0].set(xlabel="brightness b", ylabel="brightness a", title="output against (a, b)")
        fig.colorbar(image, ax=ax[0, 0], label="activity")
        corners = [(0, 0), (0, -1), (-1, 0), (-1, -1)]
        truth_act = torch.stack([act[c] for c in corners])
        truth_err = torch.stack([err[c] for c in corners])
        threshold_lines(ax[0, 1])
        ax[0, 1].bar(circuits.TRUTH_TABLE, truth_act, yerr=2 * truth_err, color="C0")
        ax[0, 1].set(xlabel="input pattern ab", ylabel="activity ±2σ", title="truth table")
        ax[0, 1].legend(fontsize="small")
        fig.suptitle(title)
        return {
            "gates": {gate: truth_entries(truth_act, truth_err)},
            gate.lower(): {"grey": floats(grey), "activity": floats(act), "stderr": floats(err)},
        }, [save(fig, out, figure)]

    return run


def detector_patterns() -> dict[str, tuple[Tensor, bool]]:
    """4×4 test patterns → (pixels, whether it is a vertical line in a middle column)."""
    patterns: dict[str, tuple[Tensor, bool]] = {}
    for c in range(4):
        pixels = torch.zeros(4, 4)
        pixels[:, c] = 1.0
        patterns[f"vertical_col{c}"] = (pixels, c in (1, 2))
    for r in range(4):
        pixels = torch.zeros(4, 4)
        pixels[r, :] = 1.0
        patterns[f"horizontal_row{r}"] = (pixels, False)
    both = torch.zeros(4, 4)
    both[:, 1:3] = 1.0
    patterns["verticals_col1+2"] = (both, False)
    patterns["diagonal"] = (torch.eye(4), False)
    patterns["antidiagonal"] = (torch.eye(4).flip(1), False)
    patterns["blank"] = (torch.zeros(4, 4), False)
    patterns["full"] = (torch.ones(4, 4), False)
    generator = torch.Generator().manual_seed(PATTERN_SEED)
    for i in range(4):
        patterns[f"random{i}"] = ((torch.rand(4, 4, generator=generator) < 0.5).float(), False)
    return patterns


def run_detector(runner: Runner, settings: Settings, out: Path) -> tuple[Results, list[str]]:
    """Fig. 19–20: the vertical-line detector's kernel and its output for every pattern."""
    patterns = detector_patterns()
    pixels = torch.stack([p for p, _ in patterns.values()])
    m = runner.measure(circuits.vertical_line_detector(pixels))
    act, err = m.activity["out"], m.stderr["out"]
    names = list(patterns)
    cols = 6
    rows = 1 + -(-len(names) // cols)
    fig = blank_figure((1.6 * cols, 1.8 * rows))
    grid = fig.add_gridspec(rows, cols)
    excite, inhibit = circuits.vertical_line_kernels()
    kernel_ax = fig.add_subplot(grid[0, :2])
    kernel_ax.imshow(
        excite - inhibit,
        cmap="coolwarm_r",
        vmin=-circuits.KERNEL_INHIBIT,
        vmax=circuits.KERNEL_INHIBIT,
    )
    for (u, v), value in zip(
        torch.cartesian_prod(torch.arange(3), torch.arange(3)).tolist(),
        (excite - inhibit).flatten().tolist(),
        strict=True,
    ):
        kernel_ax.text(v, u, f"{value:+.0f}", ha="center", va="center", fontsize=7)
    kernel_ax.set_title("3×3 kernel (+exc / −inh)", fontsize=8)
    kernel_ax.axis("off")
    text_ax = fig.add_subplot(grid[0, 2:])
    text_ax.axis("off")
    text_ax.text(
        0.0,
        0.5,
        "4×4 inputs → 2×2 neurons (valid 3×3 conv)\n"
        f"→ output, ε = {circuits.DETECTOR_OUTPUT:g}\n"
        "green: vertical line in a middle column",
        fontsize=8,
        va="center",
    )
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[1 + i // cols, i % cols])
        ax.imshow(pixels[i], cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        target = patterns[name][1]
        for spine in ax.spines.values():
            spine.set_color("C2" if target else "0.6")
            spine.set_linewidth(3 if target else 1)
        ax.set_title(f"{name}\n{act[i]:.2f} ± {err[i]:.2f}", fontsize=7)
    fig.suptitle("Fig. 19–20: vertical-line detector, output activity per pattern")
    return {
        "detector": {
            name: {**pair(act[i], err[i]), "vertical": patterns[name][1]}
            for i, name in enumerate(names)
        }
    }, [save(fig, out, "fig19_20_detector.png")]


RUNNERS: dict[str, Callable[[Runner, Settings, Path], tuple[Results, list[str]]]] = {
    "neuron": run_neuron,
    "relay": run_relay,
    "chain": run_chain,
    "and": run_and,
    "not": run_not,
    "or": run_two_input("OR", circuits.or_gate, "fig15_17_or.png", "Fig. 15–17: OR"),
    "xor": run_two_input("XOR", circuits.xor_gate, "fig16_18_xor.png", "Fig. 16–18: XOR"),
    "detector": run_detector,
}


# -- checks and report ------------------------------------------------------------------
GATE_STATES = {  # the expected state of each gate's output, by input pattern
    "AND": {"00": "low", "01": "low", "10": "low", "11": "high"},
    "OR": {"00": "low", "01": "high", "10": "high", "11": "high"},
    "XOR": {"00": "low", "01": "high", "10": "high", "11": "low"},
}


def state(thresholds: circuits.Thresholds, entry: dict[str, Any]) -> str:
    """The state ("high", "low", "undecided") of an {activity, stderr} entry."""
    return thresholds.state(entry["activity"], entry["stderr"])


def check(results: Results) -> dict[str, bool]:
    """Whether each stated behaviour holds, with a 2-standard-error margin."""
    t = circuits.Thresholds(**results["thresholds"])
    checks = {"thresholds": t.high - t.low >= 0.2 - 1e-9}
    for gate, table in results.get("gates", {}).items():
        expected = GATE_STATES[gate]
        checks[gate] = all(state(t, table[p]) == expected[p] for p in expected)
    if "not" in results:
        r = results["not"]
        checks["NOT"] = (
            state(t, r["inhibition_off"]) == "high" and state(t, r["inhibition_on"]) == "low"
        )
    if "chain" in results:
        r = results["chain"]
        kc = r["critical_k"]
        rows = list(zip(r["k"], r["activity"], r["stderr"], strict=True))
        below = [abs(a - r["baseline"]) + 2 * s < 0.1 for k, a, s in rows if k <= 0.9 * kc]
        above = [a - 2 * s > 0.5 for k, a, s in rows if k >= 1.2 * kc]
        checks["chain"] = bool(below) and bool(above) and all(below) and all(above)
    if "detector" in results:
        r = results["detector"].values()
        lowest = min(p["activity"] - 2 * p["stderr"] for p in r if p["vertical"])
        highest = max(p["activity"] + 2 * p["stderr"] for p in r if not p["vertical"])
        checks["detector"] = lowest > highest
    return checks


def fmt(entry: dict[str, float]) -> str:
    return f"{entry['activity']:.3f} ± {entry['stderr']:.4f}"


def markdown(results: Results) -> str:
    """The results as markdown tables."""
    t = circuits.Thresholds(**results["thresholds"])
    lat, mc = results["lattice"], results["monte_carlo"]
    lines = [
        f"## Results ({'quick' if results['quick'] else 'full'} run)",
        "",
        f"Lattice Nt = {lat['n_time']}, T = {lat['time_extent']}, Λ = {lat['lam']:g}, "
        f"{lat['n_kinks']} kinks. Monte Carlo: {mc['chains_per_start']} chains from each of "
        f"the {' and '.join(mc['starts'])} starts, {mc['thermalization']} + {mc['sweeps']} "
        f"sweeps ({mc['algorithm']}). Thresholds: low {t.low}, high {t.high}; a state "
        "counts when activity ± 2 standard errors clears its threshold. Entries: activity ± "
        "standard error.",
        "",
    ]
    if results.get("gates"):
        gates = list(results["gates"])
        lines += ["| inputs ab | " + " | ".join(gates) + " |", "|---" * (len(gates) + 1) + "|"]
        for p in circuits.TRUTH_TABLE:
            cells = [
                f"{fmt(results['gates'][g][p])} ({state(t, results['gates'][g][p])})" for g in gates
            ]
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        lines.append("")
    if "not" in results:
        r = results["not"]
        lines += ["| NOT, neuron 2 | activity | state |", "|---|---|---|"]
        lines += [
            f"| inhibition {key[11:]} (k = {k}) | {fmt(r[key])} | {state(t, r[key])} |"
            for key, k in (("inhibition_off", 0), ("inhibition_on", 1))
        ]
        lines.append("")
    if "chain" in results:
        r = results["chain"]
        lines += [
            f"Chain, neuron 3 (undriven baseline {r['baseline']:.3f} ± {r['baseline_stderr']:.4f}, "
            f"critical k ≈ {r['critical_k']}):",
            "",
            "| k | activity |",
            "|---|---|",
        ]
        lines += [
            f"| {k:g} | {a:.3f} ± {s:.4f} |"
            for k, a, s in zip(r["k"], r["activity"], r["stderr"], strict=True)
        ]
        lines.append("")
    if "relay" in results:
        r = results["relay"]
        lines += ["| relay ε | activity | exact |", "|---|---|---|"]
        lines += [
            f"| {e:g} | {a:.3f} ± {s:.4f} | {x:.3f} |"
            for e, a, s, x in zip(
                r["strength"], r["activity"], r["stderr"], r["exact"], strict=True
            )
        ]
        lines.append("")
    if "detector" in results:
        lines += ["| detector pattern | target | activity | state |", "|---|---|---|---|"]
        lines += [
            f"| {name} | {'yes' if p['vertical'] else 'no'} | {fmt(p)} | {state(t, p)} |"
            for name, p in results["detector"].items()
        ]
        lines.append("")
    lines += ["| check | holds |", "|---|---|"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in results["checks"].items()]
    seconds = results["seconds"]
    lines += [
        "",
        f"Wall time: {seconds['total']:.0f} s ("
        + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items() if name != "total")
        + ").",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PaperSettings:
    """Settings of ``qnn-reproduce-paper``.

    Attributes:
        out: Output folder of the figures, results.json and results.md.
        only: Experiments to run, of neuron, relay, chain, and, not, or, xor, detector.
        quick: Coarse lattice (Nt = 128) and short chains, for CI.
        seed: Monte Carlo seed.
        device: Torch device, e.g. cpu or cuda.
        threads: Torch CPU threads (0: PyTorch's default); 1 is fastest for these tensors.
    """

    out: Path = Path("outputs/paper")
    only: tuple[str, ...] = EXPERIMENTS
    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [name for name in self.only if name not in EXPERIMENTS]
        if not self.only or unknown:
            raise ValueError(f"only must name experiments of {EXPERIMENTS}, got {self.only!r}")
        check_int("seed", self.seed, 0)
        if self.seed >= SEED_LIMIT:
            raise ValueError(f"seed must be < 2**63, got {self.seed}")
        check_int("threads", self.threads, 0)
        check_device("device", self.device)
        check_output_folder(self.out)


COMMAND_LINE = CommandLine(PaperSettings, __doc__.split("\n")[0])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen experiments; returns 0 when every check holds, else 1."""
    parsed = COMMAND_LINE.parse(argv)
    args = parsed.settings
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else FULL
    config = replace(settings.config, seed=args.seed, device=args.device, progress=True)
    clear_outputs(args.out, OUTPUTS)  # an interrupted run leaves nothing that looks complete
    runner = Runner(config)
    results: Results = {
        "paper": "arXiv:1806.09664",
        "quick": args.quick,
        "lattice": {
            "n_time": config.n_time,
            "time_extent": config.time_extent,
            "lam": config.lam,
            "n_kinks": config.n_kinks,
        },
        "monte_carlo": {
            "chains_per_start": config.chains,
            "starts": list(STARTS),
            "thermalization": config.thermalization,
            "sweeps": config.sweeps,
            "algorithm": config.algorithm,
            "seed": config.seed,
            "device": str(config.device),
            "threads": torch.get_num_threads(),
        },
        "thresholds": {"low": circuits.THRESHOLDS.low, "high": circuits.THRESHOLDS.high},
        "figures": [],
        "seconds": {},
    }
    start = time.perf_counter()
    chosen = [name for name in EXPERIMENTS if name in args.only]
    for name in tqdm(chosen, desc="experiments", unit="exp"):
        runner.experiment = name
        began = time.perf_counter()
        fragment, figures = RUNNERS[name](runner, settings, args.out)
        for key, value in fragment.items():
            if key == "gates":
                results.setdefault("gates", {}).update(value)
            else:
                results[key] = value
        results["figures"] += figures
        results["seconds"][name] = round(time.perf_counter() - began, 1)
    results["seconds"]["total"] = round(time.perf_counter() - start, 1)
    results["diagnostics"] = runner.diagnostics
    results["checks"] = check(results)
    table = markdown(results)
    write_atomic(args.out / "results.md", table)
    write_atomic(args.out / "config.yaml", parsed.config)
    write_atomic(args.out / "results.json", json.dumps(results, indent=2, ensure_ascii=False))
    print(table)
    return 0 if all(results["checks"].values()) else 1
