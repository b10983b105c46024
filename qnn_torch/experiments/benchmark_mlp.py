"""How well the time-resolved mean field describes a quantum MLP, and what its Monte Carlo
costs, at the paper's lattice (Nt = 512, Λ = 5000, T = 0.7, 4 kinks).

Three measurements:

1. ``chains``: a driven chain x → h → o (drive α on h, link ε from h to o) for the cases
   of ``CHAIN_CASES``: the Monte Carlo activities of h and o (16 chains × (2000 + 2000)
   sweeps), the mean field's, and the feed-forward guess that ignores the back-reaction
   (h alone, then o driven by ε·A_h).
2. ``regime``: a random QuantumMLP (``REGIME_SIZES``, many weak links, ``REGIME_SCALE``)
   on random brightnesses: the mean field against the Monte Carlo, neuron by neuron, as
   relative differences and in Monte Carlo standard errors, over the neurons whose errors
   are finite (``untrusted`` counts the others).
3. ``cost``: milliseconds per image of the Monte Carlo of a 784 → 64 → 10 QuantumMLP,
   without gradients: 4 chains × 100 sweeps from equilibrium starts, and SamplerConfig's
   8 × (200 + 400); after one image that builds the lattice's cached path bank.

``--quick`` runs all three on the tests' small lattice (Nt = 32, Λ = 60, T = 2) with
short runs, to check the command, not the physics. Prints a table per section and writes
JSON (atomically) to --out, and the settings beside it (``<out>.config.yaml``).

    qnn-benchmark-mlp --out outputs/benchmark_mlp.json
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from qnn_torch import QuantumMLP, SamplerConfig
from qnn_torch.config import check_int
from qnn_torch.experiments.cli import CommandLine
from qnn_torch.functional.exact import neuron_moments
from qnn_torch.functional.physics import input_spike
from qnn_torch.io import check_output_folder, clear_outputs, write_atomic

SECTIONS = ("chains", "regime", "cost")
PAPER = SamplerConfig(chains=16, thermalization=200, sweeps=400)
SMALL = SamplerConfig(n_time=32, time_extent=2.0, lam=60.0, n_kinks=2, chains=8,
                      thermalization=50, sweeps=100)  # fmt: skip
CHAIN_CASES = ((0.0, 6000.0), (3000.0, 6000.0), (8000.0, 2000.0), (8000.0, 6000.0),
               (15000.0, 6000.0))  # fmt: skip
SMALL_CHAIN_CASES = ((40.0, 10.0), (40.0, 30.0))
# Strong links equilibrate slowly: at α = 15000, ε = 6000, 200 + 400 sweeps leave a drift
# that the sampler flags (infinite errors); 2000 + 2000 agree from the vacuum and spikes.
CHAIN_SWEEPS = {"thermalization": 2000, "sweeps": 2000}
REGIME_SIZES = (16, 8, 4)
REGIME_SCALE = 1000.0
SMALL_REGIME_SCALE = 10.0
COST_SIZES = (784, 64, 10)
COST_SAMPLERS = {"4 chains × 100 sweeps": {"chains": 4, "thermalization": 0, "sweeps": 100,
                                           "init": "equilibrium"},
                 "8 chains × (200 + 400) sweeps": {"chains": 8, "thermalization": 200,
                                                   "sweeps": 400}}  # fmt: skip


@dataclass(frozen=True)
class MLPBenchmarkSettings:
    """Settings of ``qnn-benchmark-mlp``.

    Attributes:
        sections: Measurements to run: chains, regime, cost.
        quick: The tests' small lattice and short runs (checks the command only).
        regime_inputs: Random inputs of the regime measurement.
        cost_images: Images per timing of the cost measurement.
        seed: Seed of the random couplings, inputs and the sampler.
        threads: Torch CPU threads (0: PyTorch's default).
        out: The JSON file to write.
    """

    sections: tuple[str, ...] = SECTIONS
    quick: bool = False
    regime_inputs: int = 6
    cost_images: int = 8
    seed: int = 0
    threads: int = 0
    out: Path = Path("outputs/benchmark_mlp.json")

    def __post_init__(self) -> None:
        if not self.sections or not set(self.sections) <= set(SECTIONS):
            raise ValueError(f"sections must name some of {SECTIONS}, got {list(self.sections)}")
        check_int("regime_inputs", self.regime_inputs, 1)
        check_int("cost_images", self.cost_images, 1)
        check_int("seed", self.seed, 0)
        check_int("threads", self.threads, 0)
        if str(self.out) in ("", "."):
            raise ValueError("out must not be empty: give the JSON file to write")
        check_output_folder(self.out.parent)


COMMAND_LINE = CommandLine(MLPBenchmarkSettings, __doc__.split("\n\n")[0].replace("\n", " "))


def _mlp(sizes: Sequence[int], config: SamplerConfig, scale: float, weights: Sequence[Tensor]
         ) -> QuantumMLP:  # fmt: skip
    mlp = QuantumMLP(sizes, config=config, coupling_scale=scale, inhibition=False,
                     readout="activity")  # fmt: skip
    with torch.no_grad():
        for parameter, weight in zip(mlp.excite, weights, strict=True):
            parameter.copy_(weight)
    return mlp


def _both(mlp: QuantumMLP, x: Tensor) -> dict[str, Tensor]:
    """Monte Carlo activities, their errors and the mean field's, all layers joined."""
    with torch.no_grad():
        started = time.perf_counter()
        sampled = torch.cat(mlp.activities(x), -1).double()
        sampled_seconds = time.perf_counter() - started
        stderr = torch.cat(mlp.last_stderr, -1)
        mlp.estimator = "mean_field"
        started = time.perf_counter()
        mean_field = torch.cat(mlp.activities(x), -1).double()
        mean_field_seconds = time.perf_counter() - started
        mlp.estimator = "monte_carlo"
    return {"mc": sampled, "stderr": stderr, "mf": mean_field,
            "seconds": torch.tensor([sampled_seconds, mean_field_seconds])}  # fmt: skip


def chains(config: SamplerConfig, cases: Sequence[tuple[float, float]]) -> list[dict]:
    """Section 1: the driven chains (see the module doc)."""
    rows = []
    profile, norm = input_spike(config.n_time, config.time_extent, config.lam, config.n_kinks)
    for alpha, epsilon in cases:
        weights = [torch.tensor([[alpha]]), torch.tensor([[epsilon]])]
        result = _both(_mlp((1, 1, 1), config, 1.0, weights), torch.ones(1, 1))
        lattice = {"time_extent": config.time_extent, "lam": config.lam}
        alone = neuron_moments(alpha * profile, None, None, **lattice)[0].sum() / norm
        guess = neuron_moments(epsilon * alone * profile, None, None, **lattice)[0].sum() / norm
        mc, stderr, mf = result["mc"][0], result["stderr"][0], result["mf"][0]
        rows.append({
            "section": "chains", "alpha": alpha, "epsilon": epsilon,
            "hidden_mc": mc[0].item(), "hidden_stderr": stderr[0].item(),
            "hidden_mean_field": mf[0].item(), "hidden_alone": alone.item(),
            "output_mc": mc[1].item(), "output_stderr": stderr[1].item(),
            "output_mean_field": mf[1].item(), "output_feed_forward": guess.item(),
            "mean_field_seconds": result["seconds"][1].item(),
        })  # fmt: skip
    return rows


def regime(config: SamplerConfig, scale: float, inputs: int, seed: int) -> list[dict]:
    """Section 2: a random MLP of many weak links (see the module doc)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = REGIME_SIZES
    pairs = zip(sizes[1:], sizes[:-1], strict=False)
    weights = [torch.rand(o, i, generator=generator) for o, i in pairs]
    x = torch.rand(inputs, sizes[0], generator=generator)
    result = _both(_mlp(sizes, replace(config, seed=seed), scale, weights), x)
    rows = []
    for name, part in (("hidden", slice(0, sizes[1])), ("output", slice(sizes[1], None))):
        mc, mf, stderr = result["mc"][:, part], result["mf"][:, part], result["stderr"][:, part]
        trusted = stderr.isfinite() & (mc > 0)  # stuck chains (infinite errors) are left out
        relative = ((mf - mc) / mc).abs()[trusted]
        z = ((mf - mc) / stderr).abs()[trusted]
        if not trusted.any():
            raise RuntimeError(f"every {name} neuron's Monte Carlo is untrusted (stuck chains)")
        rows.append({
            "section": "regime", "layer": name, "neurons": mc.numel(),
            "untrusted": int((~trusted).sum()), "mean_activity": mc.mean().item(),
            "relative_median": relative.median().item(), "relative_max": relative.max().item(),
            "z_median": z.median().item(), "z_max": z.max().item(),
            "mc_seconds": result["seconds"][0].item(), "mf_seconds": result["seconds"][1].item(),
        })  # fmt: skip
    return rows


def cost(config: SamplerConfig, sizes: Sequence[int], images: int, seed: int) -> list[dict]:
    """Section 3: milliseconds per image of the Monte Carlo (see the module doc)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(images, sizes[0], generator=generator)
    rows = []
    for label, changes in COST_SAMPLERS.items():
        sampler = replace(config, seed=seed, **changes)
        mlp = QuantumMLP(sizes, config=sampler, inhibition=False)
        with torch.no_grad():
            mlp.excite[0].mul_(0.1)  # drives ~10³–10⁴ from a 784-pixel input
            mlp(x[:1])  # builds what is cached once per lattice (the path bank)
            started = time.perf_counter()
            mlp(x)
        seconds = time.perf_counter() - started
        rows.append({"section": "cost", "sampler": label, "sizes": list(sizes),
                     "chains": sampler.chains, "sweeps": sampler.thermalization + sampler.sweeps,
                     "ms_per_image": 1000.0 * seconds / images})  # fmt: skip
    return rows


def print_tables(rows: list[dict]) -> None:
    """One plain-text table per section."""
    for section in SECTIONS:
        chosen = [r for r in rows if r["section"] == section]
        if not chosen:
            continue
        print(f"\n{section}")
        columns = [k for k in chosen[0] if k != "section"]
        print(" | ".join(columns))
        for row in chosen:
            print(" | ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                             for c in columns))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen measurements, print the tables and write the JSON to ``--out``."""
    parsed = COMMAND_LINE.parse(argv)
    args = parsed.settings
    if args.threads:
        torch.set_num_threads(args.threads)
    settings_file = args.out.with_suffix(".config.yaml")
    clear_outputs(args.out.parent, (args.out.name, settings_file.name))
    config = SMALL if args.quick else PAPER
    rows: list[dict] = []
    if "chains" in args.sections:
        if args.quick:
            rows += chains(config, SMALL_CHAIN_CASES)
        else:
            rows += chains(replace(config, **CHAIN_SWEEPS), CHAIN_CASES)
    if "regime" in args.sections:
        scale = SMALL_REGIME_SCALE if args.quick else REGIME_SCALE
        rows += regime(config, scale, args.regime_inputs, args.seed)
    if "cost" in args.sections:
        sizes = (16, 8, 4) if args.quick else COST_SIZES
        rows += cost(config, sizes, args.cost_images, args.seed)
    print_tables(rows)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "lattice": "small" if args.quick else "paper"}  # fmt: skip
    write_atomic(settings_file, parsed.config)
    write_atomic(args.out, json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0
