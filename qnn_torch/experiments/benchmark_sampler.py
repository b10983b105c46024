"""Throughput and efficiency of the sampler's moves at the paper's lattice.

Four measurements, on CPU and (where present) CUDA:

1. Site updates per second of each move on a batch of driven neurons (default 10 000,
   drives spread over 0…2·10⁴, float32, Nt = 512, Λ = 5000, T = 0.7), one per row and in
   rows of 10 unlinked outputs (a QuantumNeuronLayer's layout: common random numbers),
   and of ``run_sampler`` with the local move measuring every sweep (2 chains of each
   neuron), next to a straightforward eager local Metropolis (index-gathered even/odd
   slices, torch.roll neighbours, one randn and one rand per site) timed in the same
   process.
2. Effective independent samples of the activity per second for each algorithm:
   chains·sweeps / (2·τ_int) over the wall time, on a smaller batch of driven neurons
   started from equilibrated paths, so that τ_int is not polluted by thermalisation.
3. The cost of gradients: a QuantumNeuronLayer(784, 10) forward pass on MNIST-like
   inputs with the covariance statistics (weight requires grad), and forward plus
   backward, against the plain forward pass under torch.no_grad().
4. The Monte Carlo error of the margin between two close outputs against their activity:
   what limits the main job's decisions once fine-tuning raises the activities.
5. Decision mode at a near tie: how often it decides for the wrong output of two whose
   drives differ by < 1 % (``DECISION_DRIVES``), with the evaluation sampler of the MNIST
   job (``qnn_torch.decision.EVALUATION_CONFIG``) and its budget of chains × sweeps spent
   as 4, 8 or 64 chains.
6. Precision on demand: how honest the error of a ``target_stderr`` run is, per chain
   count: the spread of many identical networks against their mean reported error (on the
   tests' small lattice, where it is cheap; ``PRECISION_*``).

Prints a table and writes JSON (atomically) to --out, and the settings beside it
(``<out>.config.yaml``).

    qnn-benchmark-sampler --out outputs/benchmark_sampler.json
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from qnn_torch import Network, QuantumNeuronLayer, SamplerConfig
from qnn_torch.config import check_int
from qnn_torch.decision import EVALUATION_CONFIG, sequential_top
from qnn_torch.experiments.cli import CommandLine, check_device
from qnn_torch.functional import compiled as compiled_moves
from qnn_torch.functional import fused_local
from qnn_torch.functional.activity_table import activity_table
from qnn_torch.functional.physics import double_well, input_spike
from qnn_torch.functional.sampler import (
    LatticeFields,
    bisection_blocks,
    bisection_pass,
    counter_draw,
    counter_local_half_sweep,
    counter_local_sweep,
    counter_words,
    local_sweep,
    natural_step,
    sign_cluster_flips,
    sign_cluster_move,
)
from qnn_torch.functional.threefry import sweep_key
from qnn_torch.io import check_output_file, clear_outputs, write_atomic
from qnn_torch.simulate import run_sampler

SECTIONS = ("throughput", "efficiency", "gradient", "margin", "decision", "precision")
OUTPUTS_PER_ROW = 10  # a QuantumNeuronLayer's outputs on MNIST
ALGORITHMS = ("local", "multilevel", "multilevel+cluster", "local+multilevel+cluster", "auto")
SIMULATE_SWEEPS = 10  # sweeps of each timed simulate call (throughput)
# The linked network of issue 20: 64 hidden neurons, each exciting the 10 outputs; images
# per call, chains and sweeps as it was measured there (282 ms per image, default algorithm).
LINKED_HIDDEN, LINKED_STRENGTH = 64, 300.0
LINKED_IMAGES, LINKED_CHAINS, LINKED_SWEEPS = 8, 4, 100
MARGIN_DRIVES = (1000.0, 2400.0, 4000.0, 6000.0, 7800.0, 11000.0, 15000.0)
MARGIN_GAP = 0.01  # exact activity difference of the two outputs of a pair
# The main job's evaluation sampler until its equilibrium start: 4 chains, "spikes" start, 100
# thermalisation sweeps and 600 measurement sweeps, its cap (what the closest images reach).
MARGIN_CONFIG = SamplerConfig(chains=4, thermalization=100, sweeps=600, init="spikes")
DECISION_DRIVES = (12000.0, 12100.0)  # a near tie: the exact activities differ by ~0.005
DECISION_CHAINS = (4, 8, 64)  # each with the evaluation sampler's chains × max_sweeps
DECISION_SIGMAS = 3.0
PRECISION_LATTICE = {"n_time": 32, "time_extent": 2.0, "lam": 60.0, "n_kinks": 2}
PRECISION_DRIVE, PRECISION_TARGET, PRECISION_NETWORKS = 50.0, 0.02, 300
PRECISION_CHAINS = (3, 4, 8, 16)


def relay_batch(drives: torch.Tensor) -> Network:
    return Network().add_input("x").add_neuron("y").excite("x", "y", drives)


def mlp_shaped_network(images: int, hidden: int = LINKED_HIDDEN) -> Network:
    """A quantum MLP's shape: ``hidden`` neurons driven by the input (drives from 2000 to
    12 000, a different set per image of the batch), each exciting every one of
    ``OUTPUTS_PER_ROW`` outputs by ``LINKED_STRENGTH``."""
    net = Network().add_input("x")
    drives = torch.linspace(2000.0, 12000.0, hidden)
    shifts = torch.linspace(0.0, 500.0, images)
    for h in range(hidden):
        net.add_neuron(f"h{h}").excite("x", f"h{h}", drives[h] + shifts)
    for o in range(OUTPUTS_PER_ROW):
        net.add_neuron(f"o{o}")
        for h in range(hidden):
            net.excite(f"h{h}", f"o{o}", LINKED_STRENGTH)
    return net


def naive_local_sweep(
    phi: torch.Tensor,
    drive: torch.Tensor,
    profile: torch.Tensor,
    *,
    lam: float,
    spacing: float,
    width: float,
    generator: torch.Generator,
) -> None:
    """The reference eager implementation: gathers, rolls, one randn and one rand per site."""
    n_time = phi.shape[-1]
    for parity in (0, 1):
        index = torch.arange(parity, n_time, 2, device=phi.device)
        old = phi[..., index]
        left = torch.roll(phi, 1, -1)[..., index]
        right = torch.roll(phi, -1, -1)[..., index]
        new = old + width * torch.randn(old.shape, generator=generator, device=phi.device)
        field = drive[..., None] * profile[index]

        def action(x: torch.Tensor, left=left, right=right, field=field) -> torch.Tensor:
            kinetic = ((x - left) ** 2 + (right - x) ** 2) / (2 * spacing)
            return kinetic + spacing * (double_well(x, lam) + field * x * x)

        accept = torch.rand(old.shape, generator=generator, device=phi.device) < torch.exp(
            action(old) - action(new)
        )
        phi[..., index] = torch.where(accept, new, old)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median seconds of each function after one warm-up call each, timed in turn
    (``repeats`` rounds over all of them), so that a shared machine's slow spells fall on
    every function alike and their ratios stay meaningful."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def throughput(neurons: int, device: torch.device, repeats: int) -> list[dict]:
    """Site updates per second of each move, and of the naive baseline.

    Each move runs on the neurons as one neuron per row (relays, independent random
    numbers), and as rows of ``OUTPUTS_PER_ROW`` unlinked outputs, the layout of a
    QuantumNeuronLayer on MNIST, whose outputs share their random numbers.
    """
    config = SamplerConfig(chains=2, device=device)
    drives = torch.linspace(0.0, 2.0e4, neurons)
    compiled = relay_batch(drives).compile(config)
    fields = LatticeFields(
        lam=config.lam,
        spacing=config.spacing,
        profile=compiled.profile,
        drive=compiled.drive,
        input_inhibition=None,
        excite=None,
        inhibit=None,
        color_bounds=compiled.color_bounds,
    )
    generator = torch.Generator(device).manual_seed(0)
    width = natural_step(config.spacing)
    layouts = {"": (fields, torch.ones(neurons, 1, config.n_time, device=device))}
    rows_of_outputs = neurons // OUTPUTS_PER_ROW
    if rows_of_outputs:
        layer_fields = replace(
            fields,
            drive=compiled.drive[: rows_of_outputs * OUTPUTS_PER_ROW].reshape(
                rows_of_outputs, OUTPUTS_PER_ROW
            ),
            color_bounds=((0, OUTPUTS_PER_ROW),),
            shared_noise=True,
        )
        paths = torch.ones(rows_of_outputs, OUTPUTS_PER_ROW, config.n_time, device=device)
        layouts[f", {OUTPUTS_PER_ROW} outputs/row"] = (layer_fields, paths)

    def chunked(move, part: LatticeFields, phi: torch.Tensor):
        """The move over every row of ``phi`` in cache-sized chunks (with the chunk's paths,
        physics and row identities), its neuron count and its sweeps per call (one)."""
        rows = phi.shape[0]
        size = 2**17 // (phi.shape[1] * config.n_time) if device.type == "cpu" else rows
        bounds = [(i, min(i + max(size, 1), rows)) for i in range(0, rows, max(size, 1))]
        identities = torch.arange(rows, device=device)

        def run() -> None:
            for i, j in bounds:
                move(phi[i:j], part.rows(i, j), identities[i:j])

        return run, phi.shape[0] * phi.shape[1], 1

    def counter_sweep(
        part: LatticeFields,
        phi: torch.Tensor,
        half: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    ):
        """The counter-based local sweep over every row of ``phi`` (chunks of 4096 rows),
        a new stage each call."""
        rows, size, stage = phi.shape[0], 4096, [0]
        identities = torch.arange(rows, device=device)

        def run() -> None:
            stage[0] += 1
            key = sweep_key(1, stage[0], device)
            for i in range(0, rows, size):
                j = min(i + size, rows)
                counter_local_sweep(
                    phi[i:j], part.rows(i, j), width=width, key=key,
                    rows=identities[i:j], half_sweep=half,
                )  # fmt: skip

        return run, phi.shape[0] * phi.shape[1], 1

    naive_paths = layouts[""][1]
    moves = {
        "naive local (reference)": (
            lambda: naive_local_sweep(
                naive_paths[:, 0],
                compiled.drive[:, 0],
                compiled.profile,
                lam=config.lam,
                spacing=config.spacing,
                width=width,
                generator=generator,
            ),
            neurons,
            1,
        )
    }
    for suffix, (part, phi) in layouts.items():
        # On CUDA with Triton the local sweep of unlinked neurons is one fused kernel.
        kernel = " (fused kernel)" if fused_local.supports(phi, part) else ""
        local = f"local, torch generator{kernel}{suffix}"
        moves[local] = chunked(
            lambda x, f, _: local_sweep(x, f, width=width, generator=generator), part, phi
        )
        key = sweep_key(1, 2, device)
        for name, blocks, flips, words in (
            (
                "compiled",
                compiled_moves.bisection_blocks,
                compiled_moves.sign_cluster_flips,
                compiled_moves.counter_words,
            ),
            ("eager", bisection_blocks, sign_cluster_flips, counter_words),
        ):
            moves[f"multilevel, {name}{suffix}"] = chunked(
                lambda x, f, ids, blocks=blocks, words=words, key=key: bisection_pass(
                    x,
                    f,
                    levels=config.levels,
                    offset=3,
                    draw=counter_draw(ids, key, words),
                    blocks=blocks,
                ),
                part,
                phi,
            )
            moves[f"cluster, {name}{suffix}"] = chunked(
                lambda x, f, ids, flips=flips, words=words, key=key: sign_cluster_move(
                    x,
                    spacing=config.spacing,
                    draw=counter_draw(ids, key, words),
                    shared_noise=f.shared_noise,
                    flips=flips,
                ),
                part,
                phi,
            )
        for name, half in (
            ("compiled", compiled_moves.local_half_sweep),
            ("eager", counter_local_half_sweep),
        ):
            moves[f"local, Threefry counters, {name}{suffix}"] = counter_sweep(part, phi, half)
        for _ in range(20):  # leave the vacuum start behind
            moves[local][0]()
            moves[f"multilevel, eager{suffix}"][0]()
    # As a user runs it: simulate's own loop (chunks, acceptance counts, checks) with the
    # local move alone, measuring the activity every sweep, on chains × neurons rows.
    user = replace(
        config, thermalization=0, sweeps=SIMULATE_SWEEPS, algorithm="local", step_size=width
    )
    moves["simulate, local, measuring every sweep"] = (
        lambda: run_sampler(compiled, user),
        user.chains * neurons,
        SIMULATE_SWEEPS,
    )
    # A quantum MLP's shape, linked, as run_sampler runs it (per image: seconds_per_sweep ·
    # LINKED_SWEEPS / LINKED_IMAGES).
    linked = mlp_shaped_network(LINKED_IMAGES)
    for algorithm in ("auto", "local"):
        linked_config = replace(
            config,
            chains=LINKED_CHAINS,
            thermalization=0,
            sweeps=LINKED_SWEEPS,
            algorithm=algorithm,
            step_size=width if algorithm == "local" else 0.0,
        )
        network = linked.compile(linked_config)
        moves[f"linked {LINKED_HIDDEN} → {OUTPUTS_PER_ROW}, {algorithm}, run_sampler"] = (
            lambda network=network, c=linked_config: run_sampler(network, c),
            LINKED_IMAGES * LINKED_CHAINS * (LINKED_HIDDEN + OUTPUTS_PER_ROW),
            LINKED_SWEEPS,
        )
    rows = []
    medians = time_calls({name: entry[0] for name, entry in moves.items()}, device, repeats)
    for name, (_, count, sweeps) in moves.items():
        seconds = medians[name]
        rows.append(
            {
                "section": "throughput",
                "device": str(device),
                "move": name,
                "neurons": count,
                "seconds_per_sweep": seconds / sweeps,
                "site_updates_per_second": count * sweeps * config.n_time / seconds,
            }
        )
    naive = rows[0]["site_updates_per_second"]
    for row in rows:
        row["speedup_vs_naive"] = row["site_updates_per_second"] / naive
        if row["move"].startswith("linked"):
            row["ms_per_image"] = 1e3 * row["seconds_per_sweep"] * LINKED_SWEEPS / LINKED_IMAGES
    return rows


def efficiency(device: torch.device, chains: int, sweeps: int, local_sweeps: int) -> list[dict]:
    """Effective independent samples of the activity per second, per algorithm."""
    drives = torch.tensor([3000.0, 6000.0, 20000.0])
    compiled = relay_batch(drives).compile(SamplerConfig(device=device))
    # Equilibrium starting paths from the default algorithm (checked against exact results
    # in the tests), so every algorithm is timed in equilibrium.
    warm = run_sampler(
        compiled, SamplerConfig(chains=chains, thermalization=300, sweeps=1, device=device)
    )
    rows = []
    for algorithm in ALGORITHMS:
        n = local_sweeps if algorithm == "local" else sweeps
        config = SamplerConfig(
            chains=chains,
            thermalization=0,
            sweeps=n,
            algorithm=algorithm,
            device=device,
            step_size=warm.step_size,  # as tuned during the warm-up
        )
        out = run_sampler(compiled, config, initial_paths=warm.paths)
        tau = out.autocorrelation_time[:, 0]
        samples = float((chains * n / (2 * tau)).sum())
        rows.append(
            {
                "section": "efficiency",
                "device": str(device),
                "algorithm": algorithm
                if algorithm != "auto"
                else f"auto ({'+'.join(config.moves)})",
                "drives": drives.tolist(),
                "chains": chains,
                "sweeps": n,
                "seconds": out.seconds,
                "seconds_per_sweep": out.seconds / n,
                "tau_int_sweeps": tau.tolist(),
                "effective_samples_per_second": samples / out.seconds,
                "acceptance": out.acceptance,
            }
        )
    local = rows[0]["effective_samples_per_second"]
    for row in rows:
        row["gain_vs_local"] = row["effective_samples_per_second"] / local
    return rows


def margin_noise(device: torch.device, chains: int) -> list[dict]:
    """Error of the margin between two outputs ``MARGIN_GAP`` apart, against their activity.

    Each row holds two unlinked outputs, a layer's layout (common random numbers): a at
    drive α ∈ ``MARGIN_DRIVES``, b at the drive where the exact activity is A(α) − gap
    (bisection on the exact table). ``chains`` chains each measure as one chain of the
    evaluation (``MARGIN_CONFIG``); the error of the evaluation's mean over its 4 chains is
    std_c(D_c)/√4 for the chain margins D_c = A_a,c − A_b,c, next to the error of output a
    alone. ``z`` = gap / margin error: the margin in standard errors after 600 sweeps.
    This is the spread between chains; a thermalisation bias would not show in it.
    """
    config = replace(MARGIN_CONFIG, chains=chains, device=device)
    table = activity_table(
        config.n_time, config.time_extent, config.lam, config.n_kinks, max(MARGIN_DRIVES)
    )
    drive_a = torch.tensor(MARGIN_DRIVES, dtype=torch.float64)
    target = table(drive_a) - MARGIN_GAP
    low, high = torch.zeros_like(drive_a), drive_a.clone()
    for _ in range(60):  # A is increasing in α
        middle = (low + high) / 2
        below = table(middle) < target
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    drive_b = (low + high) / 2
    network = (
        Network()
        .add_input("x")
        .add_neuron("a")
        .add_neuron("b")
        .excite("x", "a", drive_a.float())
        .excite("x", "b", drive_b.float())
    )
    out = run_sampler(network.compile(config), config)
    chain = out.chain_activity.double()  # (drives, chains, 2)
    margin = chain[..., 0] - chain[..., 1]
    evaluation = math.sqrt(MARGIN_CONFIG.chains)
    rows = []
    for i, drive in enumerate(MARGIN_DRIVES):
        margin_error = float(margin[i].std()) / evaluation
        rows.append(
            {
                "section": "margin",
                "device": str(device),
                "drives": [drive, float(drive_b[i])],
                "activity": float(table(drive_a[i])),
                "gap": MARGIN_GAP,
                "chains": chains,
                "sweeps": config.sweeps,
                "margin_stderr": margin_error,
                "output_stderr": float(chain[i, :, 0].std()) / evaluation,
                "z": MARGIN_GAP / margin_error,
                "seconds": out.seconds,
            }
        )
    return rows


def wilson_upper(successes: int, trials: int, z: float = 1.96) -> float:
    """The upper end of the Wilson score interval of a binomial share (NaN without
    trials): (p + z²/2n + z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n), p = successes/n."""
    if trials == 0:
        return math.nan
    p, n = successes / trials, trials
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + spread) / (1 + z * z / n)


def decision_errors(device: torch.device, inputs: int) -> list[dict]:
    """Share of decided inputs whose decision is wrong, at a near tie, per chain count.

    ``inputs`` rows each hold two unlinked outputs at ``DECISION_DRIVES`` (the second
    higher), sampled in decision mode (:func:`~qnn_torch.decision.sequential_top`,
    ``DECISION_SIGMAS``) with :data:`~qnn_torch.decision.EVALUATION_CONFIG` and
    ``DECISION_CHAINS`` chains, each with the cap that keeps the evaluation's budget of
    chains × ``max_sweeps``. An input is decided when it stops before the cap; it is
    wrong when it then picks the first output. The share comes with its 95 % Wilson
    upper bound (which stays honest at 0 wrong of few decided).
    """
    rows = []
    budget = EVALUATION_CONFIG.chains * EVALUATION_CONFIG.max_sweeps
    for chains in DECISION_CHAINS:
        config = replace(
            EVALUATION_CONFIG, chains=chains, max_sweeps=budget // chains, device=device
        )
        profile, norm = input_spike(config.n_time, config.time_extent, config.lam, config.n_kinks)
        drive = torch.tensor(DECISION_DRIVES, device=device).expand(inputs, -1).contiguous()
        began = time.perf_counter()
        result = sequential_top(drive, profile.to(drive), norm, config, DECISION_SIGMAS)
        seconds = time.perf_counter() - began
        decided = result.sweeps < config.max_sweeps
        wrong = int((decided & (result.activity.argmax(-1) == 0)).sum())
        count = int(decided.sum())
        share = wrong / count if count else math.nan
        rows.append(
            {
                "section": "decision",
                "device": str(device),
                "drives": list(DECISION_DRIVES),
                "sigmas": DECISION_SIGMAS,
                "chains": chains,
                "inputs": inputs,
                "decided": count,
                "wrong": wrong,
                "wrong_share": share,
                "wrong_share_upper": wilson_upper(wrong, count),
                "max_sweeps": config.max_sweeps,
                "mean_sweeps": float(result.sweeps.double().mean()),
                "seconds": seconds,
            }
        )
    return rows


def precision_honesty(device: torch.device) -> list[dict]:
    """Spread of ``PRECISION_NETWORKS`` identical relays measured to ``PRECISION_TARGET``
    against their reported errors, per chain count (``PRECISION_CHAINS``).

    The rule stops on the error estimated from the chains, so it stops on its low values;
    ``ratio`` = spread / rms(reported error) is 1 for honest errors. Runs below the 16
    chains that ``SamplerConfig`` requires for ``target_stderr`` go through ``run_sampler``'s
    ``stop_when`` with the same rule.
    """
    network = relay_batch(torch.full((PRECISION_NETWORKS,), PRECISION_DRIVE))
    rows = []
    for chains in PRECISION_CHAINS:
        config = SamplerConfig(
            **PRECISION_LATTICE, chains=chains, thermalization=100, sweeps=20,
            max_sweeps=4000, seed=chains, device=device,
        )  # fmt: skip

        def met(activity: torch.Tensor, stderr: torch.Tensor, chain_activity: torch.Tensor):
            return (stderr <= PRECISION_TARGET).all(-1)

        began = time.perf_counter()
        out = run_sampler(network.compile(config), config, stop_when=met)
        activity, stderr = out.activity[:, 0], out.stderr[:, 0]
        spread = float(activity.std())
        reported = float(stderr.square().mean().sqrt())
        rows.append(
            {
                "section": "precision",
                "device": str(device),
                "chains": chains,
                "networks": PRECISION_NETWORKS,
                "target_stderr": PRECISION_TARGET,
                "spread": spread,
                "reported_stderr": reported,
                "ratio": spread / reported,
                "mean_sweeps": float(out.sweeps.double().mean()),
                "seconds": time.perf_counter() - began,
            }
        )
    return rows


def gradient_overhead(device: torch.device, images: int, repeats: int) -> list[dict]:
    """Seconds of a layer's forward without and with gradient statistics, and of backward."""
    generator = torch.Generator().manual_seed(0)
    config = SamplerConfig(chains=4, thermalization=20, sweeps=100, device=device)
    layer = QuantumNeuronLayer(784, 10, coupling_scale=100.0, readout="activity", config=config)
    with torch.no_grad():
        layer.weight.copy_(0.3 * torch.rand(10, 784, generator=generator))
    layer.to(device)
    x = torch.rand(images, 784, generator=generator, device="cpu").to(device)

    def plain() -> None:
        with torch.no_grad():
            layer(x)

    def statistics_only() -> None:
        layer(x)

    def forward_backward() -> None:
        layer(x).sum().backward()

    passes = {
        "forward, no grad": plain,
        "forward with gradient statistics": statistics_only,
        "forward + backward": forward_backward,
    }
    medians = time_calls(passes, device, repeats)
    base = medians["forward, no grad"]
    rows = []
    for name, seconds in medians.items():
        rows.append(
            {
                "section": "gradient",
                "device": str(device),
                "pass": name,
                "images": images,
                "seconds": seconds,
                "overhead_vs_forward": seconds / base - 1.0,
            }
        )
    return rows


def print_table(title: str, header: list[str], lines: list[list[str]]) -> None:
    """A markdown table with a title line."""
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for line in lines:
        print("| " + " | ".join(line) + " |")


def print_tables(rows: list[dict]) -> None:
    def section(name: str) -> list[dict]:
        return [r for r in rows if r["section"] == name]

    print_table(
        "Site updates per second (float32, Nt = 512, Λ = 5000, T = 0.7)",
        ["device", "move", "neurons", "ms/sweep", "M site updates/s", "× naive"],
        [
            [
                r["device"],
                r["move"],
                str(r["neurons"]),
                f"{1e3 * r['seconds_per_sweep']:.1f}",
                f"{r['site_updates_per_second'] / 1e6:.1f}",
                f"{r['speedup_vs_naive']:.2f}",
            ]
            for r in section("throughput")
        ],
    )
    print_table(
        "Effective independent samples of the activity per second (drives 3000, 6000, 20000)",
        ["device", "algorithm", "sweeps", "ms/sweep", "τ_int (sweeps)", "samples/s", "× local"],
        [
            [
                r["device"],
                r["algorithm"],
                str(r["sweeps"]),
                f"{1e3 * r['seconds_per_sweep']:.2f}",
                ", ".join(f"{t:.0f}" for t in r["tau_int_sweeps"]),
                f"{r['effective_samples_per_second']:.1f}",
                f"{r['gain_vs_local']:.1f}",
            ]
            for r in section("efficiency")
        ],
    )
    print_table(
        "Gradient statistics: QuantumNeuronLayer(784, 10), 4 chains × (20 + 100) sweeps",
        ["device", "pass", "images", "seconds", "overhead vs forward"],
        [
            [
                r["device"],
                r["pass"],
                str(r["images"]),
                f"{r['seconds']:.3f}",
                f"{100 * r['overhead_vs_forward']:+.1f} %",
            ]
            for r in section("gradient")
        ],
    )
    print_table(
        f"Margin of two outputs {MARGIN_GAP} apart in exact activity: error of the evaluation's"
        f" mean of {MARGIN_CONFIG.chains} chains × {MARGIN_CONFIG.sweeps} sweeps",
        ["device", "drives", "activity", "margin error", "one output's error", "gap / error"],
        [
            [
                r["device"],
                " / ".join(f"{d:.0f}" for d in r["drives"]),
                f"{r['activity']:.2f}",
                f"{r['margin_stderr']:.4f}",
                f"{r['output_stderr']:.4f}",
                f"{r['z']:.2f}",
            ]
            for r in section("margin")
        ],
    )
    print_table(
        f"Decision mode at a near tie (drives {DECISION_DRIVES[0]:g} and {DECISION_DRIVES[1]:g},"
        f" {DECISION_SIGMAS:g}σ, the MNIST job's evaluation sampler): wrong decisions",
        [
            "device",
            "chains",
            "cap",
            "inputs",
            "decided",
            "wrong",
            "wrong share (95 % bound)",
            "mean sweeps",
            "s",
        ],
        [
            [
                r["device"],
                str(r["chains"]),
                str(r["max_sweeps"]),
                str(r["inputs"]),
                str(r["decided"]),
                str(r["wrong"]),
                f"{100 * r['wrong_share']:.1f} % (≤ {100 * r['wrong_share_upper']:.1f} %)",
                f"{r['mean_sweeps']:.0f}",
                f"{r['seconds']:.0f}",
            ]
            for r in section("decision")
        ],
    )
    print_table(
        f"Precision on demand: {PRECISION_NETWORKS} identical relays measured to an error of"
        f" {PRECISION_TARGET} (test lattice), their spread against the errors they report",
        ["device", "chains", "spread", "reported error", "spread / reported", "mean sweeps"],
        [
            [
                r["device"],
                str(r["chains"]),
                f"{r['spread']:.4f}",
                f"{r['reported_stderr']:.4f}",
                f"{r['ratio']:.2f}",
                f"{r['mean_sweeps']:.0f}",
            ]
            for r in section("precision")
        ],
    )


@dataclass(frozen=True)
class BenchmarkSettings:
    """Settings of ``qnn-benchmark-sampler``.

    Attributes:
        out: The JSON file of the measurements.
        neurons: Driven neurons of the throughput section.
        repeats: Timed calls per move (their median counts).
        chains: Chains per drive (efficiency, margin).
        sweeps: Sweeps per algorithm (efficiency).
        local_sweeps: Sweeps of the local move alone (efficiency).
        images: Layer inputs (gradient section).
        decision_inputs: Inputs at the near tie (decision section).
        threads: Torch CPU threads (0: PyTorch's default).
        sections: Measurements to run, of throughput, efficiency, gradient, margin, decision,
            precision.
        devices: Devices to measure on (default: cpu, and cuda where present).
    """

    out: Path = Path("outputs/benchmark_sampler.json")
    neurons: int = 10_000
    repeats: int = 5
    chains: int = 128
    sweeps: int = 2000
    local_sweeps: int = 10000
    images: int = 50
    decision_inputs: int = 400
    threads: int = 0
    sections: tuple[str, ...] = SECTIONS
    devices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        minimums = {"neurons": 1, "repeats": 1, "chains": 2, "sweeps": 10, "local_sweeps": 10,
                    "images": 1, "decision_inputs": 1, "threads": 0}  # fmt: skip
        for name, minimum in minimums.items():
            check_int(name, getattr(self, name), minimum)
        if not self.sections or not set(self.sections) <= set(SECTIONS):
            raise ValueError(f"sections must name some of {SECTIONS}, got {self.sections!r}")
        if self.devices is not None and not self.devices:
            raise ValueError("devices needs at least one device (leave it out for the default)")
        for name in self.devices or ():
            check_device("devices", name)
        check_output_file(self.out)


COMMAND_LINE = CommandLine(BenchmarkSettings, __doc__.split("\n\n")[0])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen measurements, print the tables and write the JSON to ``--out``."""
    parsed = COMMAND_LINE.parse(argv)
    args = parsed.settings
    if args.threads:
        torch.set_num_threads(args.threads)
    settings_file = args.out.with_suffix(".config.yaml")
    clear_outputs(args.out.parent, (args.out.name, settings_file.name))
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    rows: list[dict] = []
    for name in devices:
        device = torch.device(name)
        neurons = args.neurons if device.type == "cpu" else max(args.neurons, 100_000)
        if "throughput" in args.sections:
            rows += throughput(neurons, device, args.repeats)
        if "efficiency" in args.sections:
            rows += efficiency(device, args.chains, args.sweeps, args.local_sweeps)
        if "gradient" in args.sections:
            rows += gradient_overhead(device, args.images, args.repeats)
        if "margin" in args.sections:
            rows += margin_noise(device, args.chains)
        if "decision" in args.sections:
            rows += decision_errors(device, args.decision_inputs)
        if "precision" in args.sections:
            rows += precision_honesty(device)
    print_tables(rows)
    if compiled_moves.compile_seconds:
        first = ", ".join(f"{k} {v:.1f} s" for k, v in compiled_moves.compile_seconds.items())
        print(f"\nfirst call of each compiled move, compilation included: {first}")
    meta = {
        "first_compile_seconds": dict(compiled_moves.compile_seconds),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    write_atomic(settings_file, parsed.config)
    write_atomic(args.out, json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0
