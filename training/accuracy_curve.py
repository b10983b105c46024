"""Quantum MNIST accuracy against the coupling scale k, the sweeps and the chains.

Evaluates the transferred twin on a fixed random subset of test images (``--images``,
default 300) for each k of ``--ks`` (at the default sweeps and chains), each sweep count
of ``--sweeps`` (at k = ``--k``) and each chain count of ``--chains`` (at k = ``--k``),
and writes ``accuracy_curve.json``, ``accuracy_curve.png`` and ``config.yaml`` to
``--out``. The twin's weight comes from ``--weights`` (a ``twin_weight.pt`` of
``qnn-train-then-transfer``) or is trained for ``--epochs`` epochs.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from tqdm import tqdm

from qnn_torch.config import SEED_LIMIT, SamplerConfig, check_int
from qnn_torch.experiments.cli import CommandLine
from qnn_torch.experiments.plotting import new_figure, savefig_atomic
from qnn_torch.io import check_output_folder, clear_outputs, write_atomic
from training.classical import ClassicalTwin
from training.data import MNISTDataModule, copy_offline_mnist, default_data_dir, default_mirror
from training.quantum import QuantumEvaluator, quantum_loader, quantum_subset
from training.train_then_transfer import DPI, configure_process, load_twin_weight

MNIST_TEST_IMAGES = 10_000
OUTPUTS = ("accuracy_curve.json", "accuracy_curve.png", "config.yaml")


@dataclass(frozen=True)
class CurveSettings:
    """Settings of ``qnn-accuracy-curve``.

    Attributes:
        data_dir: MNIST root, holding MNIST/raw (default: $QNN_TORCH_DATA, else ./data).
        mnist_mirror: A folder holding MNIST/raw/*.gz, copied where data_dir lacks them
            (default: $QNN_TORCH_MNIST_MIRROR).
        weights: The twin's W (a twin_weight.pt); trained when absent.
        epochs: Training epochs of the twin when weights is absent.
        images: Test images per point.
        k: Coupling scale of the sweeps and chains curves.
        ks: Coupling scales of the k curve.
        sweeps: Measurement sweeps of the sweeps curve.
        chains: Chains of the chains curve.
        default_sweeps: Sweeps of the k and chains curves.
        default_chains: Chains of the k and sweeps curves.
        thermalization: Discarded sweeps per chain.
        batch_size: Images per sampler call.
        seed: Seed of training, of the subset and of the sampler.
        out: Output folder.
        threads: Torch CPU threads (0: PyTorch's default).
    """

    data_dir: Path = field(default_factory=default_data_dir)
    mnist_mirror: Path | None = field(default_factory=default_mirror)
    weights: Path | None = None
    epochs: int = 2
    images: int = 300
    k: float = 100.0
    ks: tuple[float, ...] = (20.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
    sweeps: tuple[int, ...] = (25, 50, 150, 300, 600)
    chains: tuple[int, ...] = (2, 4, 8, 16)
    default_sweeps: int = 300
    default_chains: int = 4
    thermalization: int = 50
    batch_size: int = 50
    seed: int = 0
    out: Path = Path("outputs/accuracy_curve")
    threads: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.images, bool) or not 1 <= self.images <= MNIST_TEST_IMAGES:
            raise ValueError(f"images must lie in [1, {MNIST_TEST_IMAGES}], got {self.images}")
        for name in ("epochs", "batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("threads", self.threads, 0)
        check_int("seed", self.seed, 0)
        if self.seed >= SEED_LIMIT:
            raise ValueError(f"seed must be < 2**63, got {self.seed}")
        for name, values in (("k", (self.k,)), ("ks", self.ks)):
            if not values or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"{name} must be finite numbers > 0, got {values}")
        checks = [
            ("thermalization", {"thermalization": self.thermalization}),
            ("default_sweeps", {"sweeps": self.default_sweeps}),
            ("default_chains", {"chains": self.default_chains}),
            *(("sweeps", {"sweeps": sweeps}) for sweeps in self.sweeps),
            *(("chains", {"chains": chains}) for chains in self.chains),
        ]
        if not self.sweeps or not self.chains:
            raise ValueError("sweeps and chains must each hold at least one value")
        for name, setting in checks:
            try:
                SamplerConfig(**setting)
            except ValueError as err:  # err names the SamplerConfig field and its value
                raise ValueError(f"{name} is not a valid sampler setting: {err}") from None
        if self.weights is not None and not self.weights.is_file():
            raise ValueError(f"weights {self.weights} does not exist")
        if self.mnist_mirror is not None and not self.mnist_mirror.is_dir():
            raise ValueError(f"mnist_mirror {self.mnist_mirror} is not a folder")
        check_output_folder(self.out)


def train_twin(args: CurveSettings, data: MNISTDataModule) -> torch.Tensor:
    """The twin's W, trained for ``--epochs`` epochs."""
    twin = ClassicalTwin()
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(twin, datamodule=data)
    return twin.weight.detach().cpu()


def plot(curves: dict[str, list[dict]], classical: float, args: CurveSettings) -> None:
    """Accuracy and agreement against k, sweeps and chains, with the classical level."""
    fig, axes = new_figure(1, 3, (14, 4))
    labels = {"k": "coupling scale k", "sweeps": "measurement sweeps", "chains": "chains"}
    for ax, (name, points) in zip(axes[0], curves.items(), strict=True):
        x = [p[name] for p in points]
        ax.plot(x, [p["quantum_accuracy"] for p in points], "o-", label="quantum accuracy")
        ax.plot(x, [p["agreement"] for p in points], "s--", label="agreement with classical")
        ax.axhline(classical, color="gray", ls=":", label="classical accuracy")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.set_xlabel(labels[name])
        ax.set_ylim(min(0.5, *(p["quantum_accuracy"] for p in points)) - 0.02, 1.0)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"fraction of {args.images} test images")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    savefig_atomic(fig, args.out / "accuracy_curve.png", dpi=DPI)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the curves; returns 0 on success and 2 when MNIST is unusable.

    Bad settings, an unusable ``--out`` or ``--weights`` exit with status 2 before any work.
    """
    cli = CommandLine(CurveSettings, __doc__.split("\n")[0])
    parsed = cli.parse(argv)
    args = parsed.settings
    try:
        loaded = None if args.weights is None else load_twin_weight(args.weights)
    except ValueError as err:
        cli.error(str(err))
    configure_process(args.threads)
    clear_outputs(args.out, OUTPUTS)
    L.seed_everything(args.seed, verbose=False)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one Trainer per point
    if args.mnist_mirror is not None:
        copy_offline_mnist(args.mnist_mirror, args.data_dir)
    data = MNISTDataModule(args.data_dir, seed=args.seed)
    try:
        data.prepare_data()
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    weight = train_twin(args, data) if loaded is None else loaded
    data.setup("test")
    loader = quantum_loader(quantum_subset(data.test_set, args.images, args.seed), args.batch_size)

    base = {"k": args.k, "sweeps": args.default_sweeps, "chains": args.default_chains}
    settings = {
        "k": [{**base, "k": k} for k in args.ks],
        "sweeps": [{**base, "sweeps": s} for s in args.sweeps],
        "chains": [{**base, "chains": c} for c in args.chains],
    }
    measured: dict[tuple, dict] = {}
    curves: dict[str, list[dict]] = {name: [] for name in settings}
    classical = 0.0
    total = sum(len(points) for points in settings.values())
    with tqdm(total=total, desc="curve points", unit="point") as bar:
        for name, points in settings.items():
            for point in points:
                key = (point["k"], point["sweeps"], point["chains"])
                if key not in measured:
                    config = SamplerConfig(
                        chains=point["chains"],
                        thermalization=args.thermalization,
                        sweeps=point["sweeps"],
                        seed=args.seed,
                    )
                    evaluator = QuantumEvaluator(weight, coupling_scale=point["k"], config=config)
                    trainer = L.Trainer(
                        accelerator="cpu",
                        devices=1,
                        logger=False,
                        enable_progress_bar=False,
                        enable_model_summary=False,
                    )
                    began = time.perf_counter()
                    metrics = trainer.test(evaluator, dataloaders=loader, verbose=False)[0]
                    classical = metrics["classical_acc"]
                    measured[key] = {
                        **point,
                        "quantum_accuracy": metrics["quantum_acc"],
                        "agreement": metrics["agreement"],
                        "seconds_per_image": (time.perf_counter() - began) / args.images,
                    }
                curves[name].append(measured[key])
                bar.set_postfix(
                    {name: point[name], "acc": f"{measured[key]['quantum_accuracy']:.3f}"}
                )
                bar.update()

    results = {
        "images": args.images,
        "thermalization": args.thermalization,
        "classical_accuracy_same_images": classical,
        "curves": curves,
    }
    plot(curves, classical, args)
    write_atomic(args.out / "config.yaml", parsed.config)
    write_atomic(args.out / "accuracy_curve.json", json.dumps(results, indent=2) + "\n")
    print(f"classical accuracy on the {args.images} images: {classical:.4f}")
    for name, points in curves.items():
        print(f"against {name}:")
        for p in points:
            print(
                f"  k={p['k']:<6g} sweeps={p['sweeps']:<4d} chains={p['chains']:<3d} "
                f"quantum {p['quantum_accuracy']:.4f}  agreement {p['agreement']:.4f}  "
                f"{1000 * p['seconds_per_image']:.0f} ms/image"
            )
    print(f"wrote {args.out / 'accuracy_curve.json'} and accuracy_curve.png")
    return 0
