"""Quantum MNIST accuracy against the coupling scale k, the sweeps and the chains.

Evaluates the transferred twin on a fixed random subset of test images (``--images``,
default 300) for each k of ``--ks`` (at the default sweeps and chains), each sweep count
of ``--sweeps`` (at k = ``--k``) and each chain count of ``--chains`` (at k = ``--k``),
and writes ``accuracy_curve.json`` and ``accuracy_curve.png`` to ``--out``. The twin's
weight comes from ``--weights`` (a ``twin_weight.pt`` of train_then_transfer.py) or is
trained for ``--epochs`` epochs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from tqdm import tqdm

from qnn_torch.config import SamplerConfig
from qnn_torch.io import check_output_folder, savefig_atomic, write_atomic
from training.classical import ClassicalTwin
from training.data import MNISTDataModule, copy_offline_mnist
from training.quantum import QuantumEvaluator, quantum_loader
from training.train_then_transfer import (
    DPI,
    OFFLINE_MNIST,
    _figure,
    configure_process,
    load_twin_weight,
    quantum_subset,
)

MNIST_TEST_IMAGES = 10_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--data-dir", type=Path, default=Path("data"), help="MNIST root (holds MNIST/raw)")
    add("--weights", type=Path, help="the twin's W (twin_weight.pt); trained when absent")
    add("--epochs", type=int, default=2, help="training epochs when --weights is absent")
    add("--images", type=int, default=300, help="test images per point")
    add("--k", type=float, default=100.0, help="coupling scale of the sweeps and chains curves")
    add("--ks", type=float, nargs="+", default=[20, 50, 100, 250, 500, 1000], help="k values")
    add("--sweeps", type=int, nargs="+", default=[25, 50, 150, 300, 600], help="sweep counts")
    add("--chains", type=int, nargs="+", default=[2, 4, 8, 16], help="chain counts")
    add("--default-sweeps", type=int, default=300, help="sweeps of the k and chains curves")
    add("--default-chains", type=int, default=4, help="chains of the k and sweeps curves")
    add("--thermalization", type=int, default=50, help="discarded sweeps per chain")
    add("--batch-size", type=int, default=50, help="images per sampler call")
    add("--seed", type=int, default=0, help="seed of training, subset and sampler")
    add("--out", type=Path, default=Path("outputs/accuracy_curve"), help="output folder")
    add("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    if not 1 <= args.images <= MNIST_TEST_IMAGES:
        parser.error(f"--images must lie in [1, {MNIST_TEST_IMAGES}], got {args.images}")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0 (0: PyTorch's default), got {args.threads}")
    for k in (args.k, *args.ks):
        if not (math.isfinite(k) and k > 0):
            parser.error(f"--k and --ks must be > 0, got {k}")
    checks = [
        ("--thermalization, --seed", {}),
        ("--default-sweeps", {"sweeps": args.default_sweeps}),
        ("--default-chains", {"chains": args.default_chains}),
        *(("--sweeps", {"sweeps": sweeps}) for sweeps in args.sweeps),
        *(("--chains", {"chains": chains}) for chains in args.chains),
    ]
    for option, setting in checks:
        try:
            SamplerConfig(thermalization=args.thermalization, seed=args.seed, **setting)
        except ValueError as err:  # err names the setting and its value
            parser.error(f"{option}: {err}")
    try:
        check_output_folder(args.out)
    except ValueError as err:
        parser.error(str(err))
    return args


def train_twin(args: argparse.Namespace, data: MNISTDataModule) -> torch.Tensor:
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


def plot(curves: dict[str, list[dict]], classical: float, args: argparse.Namespace) -> None:
    """Accuracy and agreement against k, sweeps and chains, with the classical level."""
    fig, axes = _figure(1, 3, (14, 4))
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
    """Measure the curves; returns 0 on success and 2 when MNIST or ``--weights`` is unusable."""
    args = parse_args(argv)
    try:
        loaded = None if args.weights is None else load_twin_weight(args.weights)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    configure_process(args.threads)
    L.seed_everything(args.seed, verbose=False)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one Trainer per point
    if OFFLINE_MNIST.is_dir():
        copy_offline_mnist(OFFLINE_MNIST, args.data_dir)
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
    write_atomic(args.out / "accuracy_curve.json", json.dumps(results, indent=2) + "\n")
    plot(curves, classical, args)
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
