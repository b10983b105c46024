"""Train the classical twin on MNIST, transfer its weights to quantum neurons, compare both.

Stages: (1) train the twin (logistic regression with non-negative weights) on the 60 000
training images; (2) its accuracy on the 10 000 test images; (3) transfer W to couplings
k·ε̂ of a QuantumNeuronLayer; (4) evaluate quantum and classical predictions on the same
test images with ``Trainer.test`` (DDP across ``--devices``); (5) with
``--finetune-epochs N``, train the transferred layer through the sampler for N epochs
(``training.QuantumClassifier``) and evaluate it on the same images with the same
sampler settings; (6) figures and results.json.

By default the quantum test covers all 10 000 test images in decision mode: each image is
sampled in blocks of ``--sweeps`` sweeps until its top class leads the runner-up by
``--decision-sigmas`` standard errors, or up to ``--max-sweeps`` (``--decision-sigmas 0``
measures ``--sweeps`` sweeps for every image). The exact estimator (the infinite-statistics
limit of the same layer) is reported beside it. ``--quantum-test-size`` picks a fixed
random subset instead. Every stage runs under DDP across ``--devices`` processes (default:
the available cores): Lightning re-launches this script in N processes, and only rank 0
writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset, Subset

from qnn_torch.config import INITS, SamplerConfig
from qnn_torch.io import check_output_folder, save_atomic, savefig_atomic, write_atomic
from qnn_torch.module.layer import ESTIMATORS
from training.classical import ClassicalTwin
from training.data import MNISTDataModule, copy_offline_mnist
from training.finetune import (
    FINETUNE_CONFIG,
    FINETUNE_COUPLING_BUDGET,
    FINETUNE_LR,
    QuantumClassifier,
)
from training.quantum import QuantumEvaluator, quantum_loader
from training.transfer import DEFAULT_COUPLING_SCALE, transferred_weight

ROOT = Path(__file__).resolve().parents[1]  # the project folder
OFFLINE_MNIST = ROOT.parent / "shared" / "data"
CALIBRATION_IMAGES = 200  # training images that fit the fine-tuning's logit scale
MAX_CPU_PROCESSES = 8
DPI = 100


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--data-dir", type=Path, default=Path("data"), help="MNIST root (holds MNIST/raw)")
    add("--epochs", type=int, default=2, help="training epochs of the twin")
    add("--penalty", type=float, default=100.0, help="λ of the penalty λ·Σ max(−W, 0)")
    add("--lr", type=float, default=1e-2, help="initial Adam learning rate of the twin")
    add("--batch-size", type=int, default=256, help="batch size of the twin (all processes)")
    add("--weights", type=Path, help="load the twin's W (a twin_weight.pt) instead of training")
    add("--coupling-scale", type=float, default=DEFAULT_COUPLING_SCALE, help="k (paper: 1000)")
    add("--no-pixel-shift", action="store_true", help="skip the per-pixel shift of W")
    add("--chains", type=int, default=8, help="Monte Carlo chains per image")
    add("--thermalization", type=int, default=0, help="discarded sweeps per chain")
    add("--init", choices=INITS, default="equilibrium", help="starting paths of the chains")
    add("--sweeps", type=int, default=5, help="measurement sweeps per block (per chain)")
    add("--max-sweeps", type=int, default=600, help="cap of measurement sweeps per image")
    add(
        "--decision-sigmas",
        type=float,
        default=3.0,
        help="an image stops once its top class leads by this many standard errors (0: off)",
    )
    add("--quantum-test-size", type=int, default=10_000, help="test images for the quantum net")
    add("--quantum-batch-size", type=int, default=500, help="images per sampler call")
    add("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    add(
        "--devices",
        type=int,
        default=0,
        help="processes/devices, DDP when > 1 (0: every available core, up to 8, or GPU)",
    )
    add("--seed", type=int, default=0, help="seed of training, subset and sampler")
    add("--out", type=Path, default=Path("outputs/train_then_transfer"), help="output folder")
    add(
        "--threads",
        type=int,
        help="torch CPU threads per process (default: cores / devices; 0: PyTorch's)",
    )
    add("--finetune-epochs", type=int, default=0, help="epochs of quantum-aware training")
    add("--finetune-images", type=int, default=0, help="training images per epoch (0: all)")
    add(
        "--finetune-estimator",
        choices=ESTIMATORS,
        default="exact",
        help="the layer's estimator while fine-tuning (exact: its infinite-statistics limit)",
    )
    add(
        "--finetune-lr",
        type=float,
        help="initial Adam learning rate, cosine-annealed (default: 3e-2 exact, 1e-4 MC)",
    )
    add(
        "--finetune-batch-size",
        type=int,
        default=100,
        help="images per training step, split between the processes (rounded down)",
    )
    add(
        "--finetune-coupling-budget",
        type=float,
        default=FINETUNE_COUPLING_BUDGET,
        help="bound on the sum of the couplings, times the transferred sum (0: unbounded)",
    )
    add("--finetune-chains", type=int, default=FINETUNE_CONFIG.chains, help="chains per step")
    add(
        "--finetune-thermalization",
        type=int,
        default=FINETUNE_CONFIG.thermalization,
        help="discarded sweeps per training step",
    )
    add("--finetune-sweeps", type=int, default=FINETUNE_CONFIG.sweeps, help="sweeps per step")
    args = parser.parse_args(argv)
    for name in (
        "epochs",
        "batch_size",
        "quantum_test_size",
        "quantum_batch_size",
        "finetune_batch_size",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("finetune_epochs", "finetune_images"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.finetune_lr is None:
        args.finetune_lr = FINETUNE_LR[args.finetune_estimator]
    for name in ("lr", "finetune_lr", "coupling_scale"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if not (math.isfinite(args.penalty) and args.penalty >= 0):
        parser.error(f"--penalty must be >= 0, got {args.penalty}")
    if args.devices < 0:
        parser.error(f"--devices must be >= 0 (0: automatic), got {args.devices}")
    if args.threads is not None and args.threads < 0:
        parser.error(f"--threads must be >= 0 (0: PyTorch's default), got {args.threads}")
    args.devices, args.threads = machine_share(args.accelerator, args.devices, args.threads)
    for name in ("batch_size", "finetune_batch_size")[: 2 if args.finetune_epochs else 1]:
        if getattr(args, name) < args.devices:
            parser.error(
                f"--{name.replace('_', '-')} must be >= the {args.devices} devices (it is "
                f"split between them), got {getattr(args, name)}"
            )
    for prefix, build in (("--", sampler_config), ("--finetune-", finetune_config)):
        try:
            build(args)
        except ValueError as err:  # err names the setting and its value
            parser.error(
                f"{prefix}chains, {prefix}thermalization, {prefix}sweeps, --max-sweeps, "
                f"--seed: {err}"
            )
    if not (math.isfinite(args.finetune_coupling_budget) and args.finetune_coupling_budget >= 0):
        parser.error(
            "--finetune-coupling-budget must be >= 0 (0: unbounded), got "
            f"{args.finetune_coupling_budget}"
        )
    if not (math.isfinite(args.decision_sigmas) and args.decision_sigmas >= 0):
        parser.error(f"--decision-sigmas must be >= 0 (0: off), got {args.decision_sigmas}")
    if args.decision_sigmas > 0 and args.max_sweeps <= args.sweeps:
        parser.error(
            f"--max-sweeps must exceed --sweeps={args.sweeps} in decision mode "
            f"(--decision-sigmas > 0), got {args.max_sweeps}"
        )
    try:
        check_output_folder(args.out)
    except ValueError as err:
        parser.error(str(err))
    return args


def machine_share(accelerator: str, devices: int, threads: int | None) -> tuple[int, int]:
    """Processes and torch threads per process; 0 devices / None threads: use the machine.

    On CPU, one process per available core (up to ``MAX_CPU_PROCESSES``: each holds MNIST
    and a copy of the model) with cores / processes threads each; on a GPU, every visible
    GPU with one thread per process.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if devices == 0:
        gpus = torch.cuda.device_count() if accelerator in ("gpu", "cuda", "auto") else 0
        devices = gpus or min(cores or 1, MAX_CPU_PROCESSES)
    if threads is None:
        threads = max(1, (cores or 1) // devices) if accelerator == "cpu" else 1
    return devices, threads


def sampler_config(args: argparse.Namespace) -> SamplerConfig:
    """Sampler settings of the quantum test."""
    return SamplerConfig(
        chains=args.chains,
        thermalization=args.thermalization,
        sweeps=args.sweeps,
        max_sweeps=args.max_sweeps if args.decision_sigmas > 0 else 0,
        init=args.init,
        seed=args.seed,
    )


def finetune_config(args: argparse.Namespace) -> SamplerConfig:
    """Sampler settings of the fine-tuning steps."""
    return SamplerConfig(
        chains=args.finetune_chains,
        thermalization=args.finetune_thermalization,
        sweeps=args.finetune_sweeps,
        init=FINETUNE_CONFIG.init,
        seed=args.seed,
    )


def load_twin_weight(path: Path) -> Tensor:
    """The (10, 784) weight tensor saved at ``path``; ValueError naming --weights otherwise."""
    if not path.is_file():
        raise ValueError(f"--weights {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu")
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError):
        loaded = None
    if not isinstance(loaded, Tensor) or loaded.shape != (10, 784):
        raise ValueError(f"--weights {path} does not hold a (10, 784) weight tensor")
    return loaded


def quantum_subset(test_set: Dataset, size: int, seed: int) -> Subset:
    """The first ``size`` images of a seeded permutation of the test set, in test-set order."""
    if size >= len(test_set):
        return Subset(test_set, range(len(test_set)))
    permutation = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(seed))
    return Subset(test_set, permutation[:size].sort().values.tolist())


def _figure(rows: int, columns: int, size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, columns, squeeze=False)


def plot_weights(weight: Tensor, couplings: Tensor, path: Path) -> None:
    """The trained W and the couplings ε̂ of each digit as 28×28 images (paper Fig. 22)."""
    fig, axes = _figure(2, 10, (15, 3.6))
    for row, (matrix, label, cmap) in enumerate(
        ((weight, "trained W", "viridis"), (couplings, "couplings ε̂", "magma"))
    ):
        vmin, vmax = float(matrix.min()), float(matrix.max())
        for digit, ax in enumerate(axes[row]):
            image = ax.imshow(matrix[digit].reshape(28, 28), cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}: {digit}" if digit == 0 else str(digit), fontsize=9)
        fig.colorbar(image, ax=axes[row].tolist(), shrink=0.8)
    savefig_atomic(fig, path, dpi=DPI)


def plot_samples(
    images: Tensor, labels: Tensor, classical: Tensor, quantum: Tensor, path: Path
) -> None:
    """Sample digits with classical softmax scores and quantum activities (paper Fig. 23)."""
    count = len(images)
    fig, axes = _figure(2, count, (2.2 * count, 4.2))
    digits = np.arange(10)
    for n in range(count):
        axes[0, n].imshow(images[n].reshape(28, 28), cmap="gray_r")
        axes[0, n].set_axis_off()
        axes[0, n].set_title(f"label {int(labels[n])}", fontsize=9)
        ax = axes[1, n]
        ax.bar(digits - 0.2, classical[n], width=0.4, label="classical softmax")
        ax.bar(digits + 0.2, quantum[n], width=0.4, label="quantum activity")
        ax.set_xticks(digits)
        ax.set_ylim(0, max(1.0, float(quantum.max()) * 1.05))
        ax.tick_params(labelsize=7)
        if n == 0:
            ax.set_ylabel("score")
    axes[1, 0].legend(fontsize=7, loc="upper left")
    savefig_atomic(fig, path, dpi=DPI)


def plot_confusion(matrices: dict[str, Tensor], path: Path) -> None:
    """Confusion matrices (rows: true digit, columns: prediction) side by side."""
    fig, axes = _figure(1, len(matrices), (5.2 * len(matrices), 4.6))
    images = int(next(iter(matrices.values())).sum())
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix.numpy()):
            color = "white" if value > matrix.max() / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(10))
        ax.set_yticks(range(10))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        accuracy = matrix.diag().sum() / images
        ax.set_title(f"{name}: accuracy {accuracy:.4f} on {images} test images")
    savefig_atomic(fig, path, dpi=DPI)


def confusion(labels: Tensor, predictions: Tensor) -> Tensor:
    """10×10 confusion matrix: entry (i, j) counts images of digit i predicted as j."""
    return torch.bincount(labels * 10 + predictions, minlength=100).reshape(10, 10)


def process_batch(batch_size: int, devices: int) -> int:
    """Each process's share of a step's ``batch_size`` images: split, not multiplied, so a
    step sees the same number of images on any process count (rounded down)."""
    return batch_size // devices


def configure_process(threads: int) -> None:
    """Torch threads per process (0: PyTorch's default) and the warnings these scripts expect."""
    if threads:
        # Also for the DDP processes, which Lightning would otherwise give cores/processes.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(threads)
    # IndexedBatches splits its batches between data-loader workers itself.
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


def _trainer(args: argparse.Namespace, **kwargs: object) -> L.Trainer:
    return L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


def finetune(weight: Tensor, args: argparse.Namespace) -> QuantumClassifier:
    """Quantum-aware training of the transferred layer for ``--finetune-epochs`` epochs."""
    config = finetune_config(args)
    # Like the twin's, the step's batch is split between the processes, not multiplied:
    # the same steps per epoch and the same gradient (DDP averages) on any process count.
    per_process = process_batch(args.finetune_batch_size, args.devices)
    data = MNISTDataModule(args.data_dir, batch_size=per_process, seed=args.seed)
    data.setup("fit")
    calibration = torch.stack([data.train_set[i][0] for i in range(CALIBRATION_IMAGES)])
    classifier = QuantumClassifier.from_twin(
        weight,
        coupling_scale=args.coupling_scale,
        per_pixel_shift=not args.no_pixel_shift,
        config=config,
        estimator=args.finetune_estimator,
        calibration_images=calibration,
        coupling_budget=args.finetune_coupling_budget or None,
        lr=args.finetune_lr,
    )
    per_step = per_process * args.devices  # images of one step, all processes
    batches = -(-args.finetune_images // per_step) if args.finetune_images else 1.0
    trainer = _trainer(
        args, max_epochs=args.finetune_epochs, limit_train_batches=batches, limit_val_batches=0
    )
    trainer.fit(classifier, datamodule=data)
    return classifier


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline; returns 0 on success and 2 when MNIST or ``--weights`` is unusable."""
    args = parse_args(argv)
    try:
        loaded = None if args.weights is None else load_twin_weight(args.weights)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    configure_process(args.threads)
    L.seed_everything(args.seed, workers=True, verbose=False)
    seconds: dict[str, float] = {}
    began = time.perf_counter()

    if OFFLINE_MNIST.is_dir():
        copy_offline_mnist(OFFLINE_MNIST, args.data_dir)
    per_process = process_batch(args.batch_size, args.devices)
    data = MNISTDataModule(args.data_dir, batch_size=per_process, seed=args.seed)
    try:
        data.prepare_data()
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    twin = ClassicalTwin(penalty=args.penalty, lr=args.lr)
    trainer = _trainer(args, max_epochs=args.epochs)
    stage = time.perf_counter()
    if loaded is None:
        trainer.fit(twin, datamodule=data)
    else:
        with torch.no_grad():
            twin.weight.copy_(loaded)
    seconds["twin_training"] = time.perf_counter() - stage

    stage = time.perf_counter()
    classical_accuracy = trainer.test(twin, datamodule=data, verbose=False)[0]["test_acc"]
    seconds["classical_test"] = time.perf_counter() - stage

    stage = time.perf_counter()
    weight = twin.weight.detach().cpu()
    config = sampler_config(args)
    evaluator = QuantumEvaluator(
        weight,
        coupling_scale=args.coupling_scale,
        per_pixel_shift=not args.no_pixel_shift,
        config=config,
        decision_sigmas=args.decision_sigmas,
    )
    seconds["transfer"] = time.perf_counter() - stage

    stage = time.perf_counter()
    data.setup("test")
    subset = quantum_subset(data.test_set, args.quantum_test_size, args.seed)
    quantum_trainer = _trainer(args)
    metrics = quantum_trainer.test(
        evaluator, dataloaders=quantum_loader(subset, args.quantum_batch_size), verbose=False
    )[0]
    seconds["quantum_test"] = time.perf_counter() - stage

    finetuned = None
    if args.finetune_epochs:
        stage = time.perf_counter()
        classifier = finetune(weight, args)
        seconds["finetune"] = time.perf_counter() - stage
        stage = time.perf_counter()
        finetuned_evaluator = QuantumEvaluator(
            weight,
            coupling_scale=args.coupling_scale,
            per_pixel_shift=not args.no_pixel_shift,
            config=config,
            decision_sigmas=args.decision_sigmas,
            couplings=classifier.couplings.cpu(),
        )
        finetuned = _trainer(args).test(
            finetuned_evaluator,
            dataloaders=quantum_loader(subset, args.quantum_batch_size),
            verbose=False,
        )[0]
        finetuned["predictions"] = finetuned_evaluator.predictions
        finetuned["couplings"] = classifier.couplings.cpu()
        finetuned["logit_scale"] = float(classifier.logit_scale)
        seconds["finetuned_quantum_test"] = time.perf_counter() - stage
    if not quantum_trainer.is_global_zero:
        return 0

    stage = time.perf_counter()
    save_atomic(weight, args.out / "twin_weight.pt")
    predictions = evaluator.predictions
    images_tested = len(predictions["index"])
    figures = ["mnist_weights.png", "mnist_samples.png", "mnist_confusion.png"]
    couplings = transferred_weight(weight, per_pixel_shift=not args.no_pixel_shift)
    plot_weights(weight, couplings, args.out / figures[0])
    evaluator.cpu()
    evaluator.layer.readout = "activity"  # the softmax of activities looks flat in a plot
    shown = range(min(6, len(subset)))
    samples = torch.stack([subset[i][0] for i in shown])
    with torch.no_grad():
        classical_scores = evaluator.classical_scores(samples).softmax(-1)
        quantum_scores = evaluator(samples)
    sample_labels = torch.tensor([subset[i][1] for i in shown])
    plot_samples(samples, sample_labels, classical_scores, quantum_scores, args.out / figures[1])
    matrices = {
        name: confusion(predictions["label"], predictions[name])
        for name in ("classical", "quantum")
    }
    plot_confusion(matrices, args.out / figures[2])
    mnist_index = torch.tensor(subset.indices)[predictions["index"]]
    columns = {
        "test_index": mnist_index,
        **{k: predictions[k] for k in ("label", "classical", "quantum", "exact")},
    }
    if finetuned is not None:
        save_atomic(finetuned["couplings"], args.out / "finetuned_couplings.pt")
        columns["finetuned"] = finetuned["predictions"]["quantum"]
        columns["finetuned_exact"] = finetuned["predictions"]["exact"]
    rows = zip(*(column.tolist() for column in columns.values()), strict=True)
    write_atomic(
        args.out / "predictions.csv",
        ",".join(columns) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows),
    )
    seconds["figures"] = time.perf_counter() - stage
    seconds["total"] = time.perf_counter() - began

    results = {
        "classical_accuracy": classical_accuracy,
        "quantum_accuracy": metrics["quantum_acc"],
        "exact_quantum_accuracy": metrics["exact_acc"],
        "classical_accuracy_same_images": metrics["classical_acc"],
        "agreement": metrics["agreement"],
        "quantum_images": images_tested,
        "weight_min": float(weight.min()),
        "weight_max": float(weight.max()),
        "weights_nonnegative": float(weight.min()) >= -1e-3 * float(weight.max()),
        "coupling_scale": args.coupling_scale,
        "per_pixel_shift": not args.no_pixel_shift,
        "chains": args.chains,
        "thermalization": args.thermalization,
        "sweeps": args.sweeps,
        "init": args.init,
        "max_sweeps": args.max_sweeps,
        "decision_sigmas": args.decision_sigmas,
        "mean_sweeps": metrics["sweeps"],
        "quantum_batch_size": args.quantum_batch_size,
        "epochs": args.epochs,
        "penalty": args.penalty,
        "weights_loaded_from": None if args.weights is None else str(args.weights),
        "seed": args.seed,
        "accelerator": args.accelerator,
        "devices": args.devices,
        "threads": torch.get_num_threads(),
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "seconds_per_quantum_image": round(seconds["quantum_test"] / images_tested, 4),
        "confusion": {name: matrix.tolist() for name, matrix in matrices.items()},
        "figures": figures,
    }
    if finetuned is not None:
        results.update(
            {
                "finetuned_quantum_accuracy": finetuned["quantum_acc"],
                "finetuned_exact_accuracy": finetuned["exact_acc"],
                "finetuned_mean_sweeps": finetuned["sweeps"],
                "finetune_estimator": args.finetune_estimator,
                "finetuned_agreement": finetuned["agreement"],
                "finetune_epochs": args.finetune_epochs,
                "finetune_images": args.finetune_images,
                "finetune_lr": args.finetune_lr,
                "finetune_batch_size": process_batch(args.finetune_batch_size, args.devices)
                * args.devices,
                "finetune_logit_scale": finetuned["logit_scale"],
                "finetune_coupling_budget": args.finetune_coupling_budget,
            }
        )
        if args.finetune_estimator == "monte_carlo":
            results["finetune_sampler"] = {
                "chains": args.finetune_chains,
                "thermalization": args.finetune_thermalization,
                "sweeps": args.finetune_sweeps,
            }
    write_atomic(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    print_summary(results, args)
    return 0


def print_summary(results: dict, args: argparse.Namespace) -> None:
    """The table of accuracies and stage times, and how to evaluate all 10 000 images."""
    n = results["quantum_images"]
    rows = [
        ("classical accuracy (10 000 test images)", f"{results['classical_accuracy']:.4f}"),
        (
            f"classical accuracy ({n} quantum images)",
            f"{results['classical_accuracy_same_images']:.4f}",
        ),
        (f"quantum accuracy ({n} images)", f"{results['quantum_accuracy']:.4f}"),
        (f"exact quantum accuracy ({n} images)", f"{results['exact_quantum_accuracy']:.4f}"),
        ("mean measurement sweeps per image", f"{results['mean_sweeps']:.1f}"),
        *(
            [
                (
                    f"fine-tuned quantum accuracy ({n} images)",
                    f"{results['finetuned_quantum_accuracy']:.4f}",
                ),
                (
                    f"fine-tuned exact accuracy ({n} images)",
                    f"{results['finetuned_exact_accuracy']:.4f}",
                ),
            ]
            if "finetuned_quantum_accuracy" in results
            else []
        ),
        ("agreement quantum vs classical", f"{results['agreement']:.4f}"),
        ("weights min / max", f"{results['weight_min']:.3g} / {results['weight_max']:.3g}"),
    ]
    rows += [(f"time: {name}", f"{value:.1f} s") for name, value in results["seconds"].items()]
    width = max(len(name) for name, _ in rows)
    print("\n" + "\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    print(f"\nwrote {args.out / 'results.json'} and figures in {args.out}")
    if n < 10_000:
        minutes = results["seconds_per_quantum_image"] * 10_000 / 60
        print(
            f"All 10 000 test images (quantum test ~{minutes:.0f} min with these settings and "
            f"--devices {args.devices}; each extra device or node divides it):\n"
            f"  python scripts/train_then_transfer.py --weights {args.out / 'twin_weight.pt'} "
            f"--quantum-test-size 10000 --chains {args.chains} --thermalization "
            f"{args.thermalization} --init {args.init} --sweeps {args.sweeps} "
            f"--max-sweeps {args.max_sweeps} "
            f"--decision-sigmas {args.decision_sigmas:g} --coupling-scale "
            f"{args.coupling_scale:g} --quantum-batch-size {args.quantum_batch_size} "
            f"--seed {args.seed} --data-dir {args.data_dir} --accelerator {args.accelerator} "
            f"--devices {args.devices} --threads {args.threads}"
            f"{' --no-pixel-shift' if args.no_pixel_shift else ''} --out {args.out}_full"
        )
