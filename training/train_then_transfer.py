"""Train the classical twin on MNIST, transfer its weights to quantum neurons, compare both.

Stages: (1) train the twin (logistic regression with non-negative weights) on the 60 000
training images; (2) its accuracy on the 10 000 test images; (3) transfer W to couplings
k·ε̂ of a QuantumNeuronLayer; (4) evaluate quantum and classical predictions on the same
test images with ``Trainer.test`` (DDP across ``--devices``); (5) with
``--finetune_epochs N``, train the transferred layer through its estimator for N epochs
(``training.QuantumClassifier``), keep the epoch with the best validation accuracy, and
evaluate it on the same images with the same sampler; (6) figures and results.json.

By default the quantum test covers all 10 000 test images in decision mode: each image is
sampled in blocks of ``--sampler.sweeps`` sweeps until its top class leads the runner-up
by ``--decision_sigmas`` standard errors, or up to ``--sampler.max_sweeps``
(``--decision_sigmas 0`` measures ``--sampler.sweeps`` sweeps for every image). The exact
estimator (the infinite-statistics limit of the same layer) is reported beside it.
``--quantum_test_size`` picks a fixed random subset instead. Every stage runs under DDP
across ``--devices`` processes (default: the available cores): Lightning re-launches the
command in N processes, and only rank 0 writes the outputs.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from qnn_torch.config import SEED_LIMIT, SamplerConfig, check_int
from qnn_torch.decision import EVALUATION_CONFIG
from qnn_torch.experiments.cli import CommandLine
from qnn_torch.experiments.plotting import new_figure, savefig_atomic
from qnn_torch.functional.layer import check_decision
from qnn_torch.io import check_output_folder, clear_outputs, save_atomic, write_atomic
from qnn_torch.module.layer import ESTIMATORS
from training.classical import ClassicalTwin
from training.data import (
    MNISTDataModule,
    copy_offline_mnist,
    default_data_dir,
    default_mirror,
    num_classes,
)
from training.finetune import (
    FINETUNE_CONFIG,
    FINETUNE_COUPLING_BUDGET,
    FINETUNE_LR,
    QuantumClassifier,
)
from training.quantum import QuantumEvaluator, quantum_loader, quantum_subset
from training.transfer import DEFAULT_COUPLING_SCALE, transferred_weight

QUANTUM_TEST_CONFIG = EVALUATION_CONFIG
"""The quantum test's sampler: 64 chains from equilibrium starts, 1 to 75 sweeps."""
CALIBRATION_IMAGES = 200  # training images that fit the fine-tuning's logit scale
MAX_CPU_PROCESSES = 8
DPI = 100
OUTPUTS = (  # results.json first: removed first, written last
    "results.json",
    "predictions.csv",
    "config.yaml",
    "twin_weight.pt",
    "quantum_layer.pt",
    "finetuned_layer.pt",
    "mnist_weights.png",
    "mnist_samples.png",
    "mnist_confusion.png",
    "logs/twin",
    "logs/finetune",
    "checkpoints/finetuned-best.ckpt",
)
RENAMED = {  # the options of the first command line, where they moved
    **{f"--{name}": [f"--sampler.{name}"] for name in ("chains", "thermalization", "sweeps")},
    "--init": ["--sampler.init"],
    "--max-sweeps": ["--sampler.max_sweeps"],
    **{
        f"--finetune-{name}": [f"--finetune_sampler.{name}"]
        for name in ("chains", "thermalization", "sweeps")
    },
}


@dataclass(frozen=True)
class PipelineSettings:
    """Settings of ``qnn-train-then-transfer``; its samplers are ``--sampler.*`` and
    ``--finetune_sampler.*``.

    Attributes:
        data_dir: MNIST root, holding MNIST/raw (default: $QNN_TORCH_DATA, else ./data).
        mnist_mirror: A folder holding MNIST/raw/*.gz, copied where data_dir lacks them
            (machines without internet; default: $QNN_TORCH_MNIST_MIRROR).
        epochs: Training epochs of the twin.
        penalty: λ of the twin's penalty λ·Σ max(−W, 0).
        lr: Initial Adam learning rate of the twin.
        batch_size: Batch size of the twin, split between the processes.
        weights: Load the twin's W (a twin_weight.pt) instead of training it.
        coupling_scale: k of the couplings k·ε̂ (paper: 1000).
        pixel_shift: Subtract each pixel's minimum over the classes from W first.
        decision_sigmas: An image stops once its top class leads by this many standard
            errors (0: every image measures sampler.sweeps).
        quantum_test_size: Test images of the quantum test (a seeded random subset).
        quantum_batch_size: Images per sampler call.
        accelerator: Lightning accelerator: cpu, gpu or auto.
        devices: Processes or GPUs, DDP when > 1 (0: every core up to 8, or every GPU).
        seed: Seed of training, of the subset and of the samplers.
        out: Output folder.
        threads: Torch CPU threads per process (default: cores / devices; 0: PyTorch's).
        finetune_epochs: Epochs of quantum-aware training of the transferred layer.
        finetune_images: Training images per fine-tuning epoch (0: all).
        finetune_estimator: The layer's estimator while fine-tuning: exact or monte_carlo.
        finetune_lr: Initial Adam learning rate of fine-tuning, cosine-annealed (default:
            3e-2 exact, 1e-4 monte_carlo).
        finetune_batch_size: Images per fine-tuning step, split between the processes.
        finetune_coupling_budget: Bound on the couplings' sum while fine-tuning, times the
            transferred sum (0: unbounded).
    """

    data_dir: Path = field(default_factory=default_data_dir)
    mnist_mirror: Path | None = field(default_factory=default_mirror)
    epochs: int = 2
    penalty: float = 100.0
    lr: float = 1e-2
    batch_size: int = 256
    weights: Path | None = None
    coupling_scale: float = DEFAULT_COUPLING_SCALE
    pixel_shift: bool = True
    decision_sigmas: float = 3.0
    quantum_test_size: int = 10_000
    quantum_batch_size: int = 500
    accelerator: str = "cpu"
    devices: int = 0
    seed: int = 0
    out: Path = Path("outputs/train_then_transfer")
    threads: int | None = None
    finetune_epochs: int = 0
    finetune_images: int = 0
    finetune_estimator: str = "exact"
    finetune_lr: float | None = None
    finetune_batch_size: int = 100
    finetune_coupling_budget: float = FINETUNE_COUPLING_BUDGET

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "quantum_test_size", "quantum_batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("finetune_batch_size", self.finetune_batch_size, 1)
        for name in ("finetune_epochs", "finetune_images", "devices", "seed"):
            check_int(name, getattr(self, name), 0)
        if self.seed >= SEED_LIMIT:
            raise ValueError(f"seed must be < 2**63, got {self.seed}")
        if self.threads is not None:
            check_int("threads", self.threads, 0)
        for name in ("lr", "coupling_scale", "finetune_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        for name in ("penalty", "decision_sigmas", "finetune_coupling_budget"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.finetune_estimator not in ESTIMATORS:
            raise ValueError(
                f"finetune_estimator must be one of {ESTIMATORS}, got {self.finetune_estimator!r}"
            )
        if self.weights is not None and not self.weights.is_file():
            raise ValueError(f"weights {self.weights} does not exist")
        check_job_settings(self)

    @property
    def finetune_learning_rate(self) -> float:
        """``finetune_lr``, or the default of the fine-tuning estimator."""
        return self.finetune_lr or FINETUNE_LR[self.finetune_estimator]


def command_line() -> CommandLine[PipelineSettings]:
    """The command line (built per call: the data folder's default comes from the environment)."""
    return CommandLine(
        PipelineSettings,
        __doc__.split("\n")[0],
        samplers={
            "sampler": (QUANTUM_TEST_CONFIG, "Sampler of the quantum test (seed: --seed)"),
            "finetune_sampler": (FINETUNE_CONFIG, "Sampler of Monte Carlo fine-tuning steps"),
        },
        renamed=RENAMED,
    )


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


def load_twin_weight(path: Path) -> Tensor:
    """The (10, 784) weight tensor saved at ``path``; ValueError naming --weights otherwise."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError):
        loaded = None
    if not isinstance(loaded, Tensor) or loaded.shape != (10, 784):
        raise ValueError(f"--weights {path} does not hold a (10, 784) weight tensor")
    return loaded


def plot_weights(weight: Tensor, couplings: Tensor, path: Path) -> None:
    """The trained W and the couplings ε̂ of each digit as 28×28 images (paper Fig. 22)."""
    fig, axes = new_figure(2, 10, (15, 3.6))
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
    fig, axes = new_figure(2, count, (2.2 * count, 4.2))
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
    fig, axes = new_figure(1, len(matrices), (5.2 * len(matrices), 4.6))
    plotter = MulticlassConfusionMatrix(num_classes=num_classes)
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        plotter.plot(val=matrix, ax=ax, cmap="Blues")
        images = int(matrix.sum())
        accuracy = float(matrix.diag().sum()) / images
        ax.set_title(f"{name}: accuracy {accuracy:.4f} on {images} test images")
    savefig_atomic(fig, path, dpi=DPI)


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


class JobSettings(Protocol):
    """What the helpers below need of a job's settings."""

    out: Path
    accelerator: str
    data_dir: Path
    mnist_mirror: Path | None
    seed: int


def check_job_settings(settings: JobSettings) -> None:
    """ValueError for an unknown accelerator, a GPU where CUDA is missing, a mirror that is
    not a folder, or an unusable output folder (the checks every MNIST job shares)."""
    if settings.accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise ValueError(
            f"accelerator must be cpu, gpu, cuda or auto, got {settings.accelerator!r}"
        )
    if settings.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"accelerator {settings.accelerator!r}: no CUDA device is available")
    if settings.mnist_mirror is not None and not settings.mnist_mirror.is_dir():
        raise ValueError(f"mnist_mirror {settings.mnist_mirror} is not a folder")
    check_output_folder(settings.out)


def make_trainer(
    settings: JobSettings, devices: int, logs: str | None = None, **kwargs: object
) -> L.Trainer:
    """A Trainer on the settings' machine; ``logs`` names a CSV log in ``out/logs``."""
    logger = CSVLogger(settings.out, name="logs", version=logs) if logs else False
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(
        accelerator=settings.accelerator,
        devices=devices,
        logger=logger,
        enable_model_summary=False,
        **kwargs,
    )


def epoch_batches(images: int, per_step: int) -> int | float:
    """``limit_train_batches`` for ``images`` training images per epoch in steps of
    ``per_step`` (all processes), rounded up; 0 images means all (1.0)."""
    return -(-images // per_step) if images else 1.0


def fit_best_epoch(
    module: L.LightningModule,
    data: L.LightningDataModule,
    settings: JobSettings,
    devices: int,
    logs: str,
    checkpoint: str,
    **kwargs: object,
) -> L.LightningModule:
    """Fit ``module`` (Trainer ``kwargs``: epochs, batches), logging to ``out/logs/<logs>``,
    and load the weights of its epoch of best ``val_acc`` back into it, which
    ``ModelCheckpoint`` keeps in ``out/checkpoints/<checkpoint>.ckpt``. Returns ``module``."""
    best = ModelCheckpoint(
        dirpath=str(settings.out / "checkpoints"),  # a str: checkpoints load weights_only
        filename=checkpoint,
        monitor="val_acc",
        mode="max",
        save_weights_only=True,
    )
    trainer = make_trainer(
        settings, devices, logs=logs, callbacks=[best], enable_checkpointing=True, **kwargs
    )
    trainer.fit(module, datamodule=data)
    checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"])
    return module


def prepared_mnist(settings: JobSettings, batch_size: int) -> MNISTDataModule | None:
    """The job's MNIST data module (batches of ``batch_size`` per process), its files
    copied from ``settings.mnist_mirror`` if set and checked; None, with the error printed,
    when MNIST is unusable."""
    if settings.mnist_mirror is not None:
        copy_offline_mnist(settings.mnist_mirror, settings.data_dir)
    data = MNISTDataModule(settings.data_dir, batch_size=batch_size, seed=settings.seed)
    try:
        data.prepare_data()
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    return data


def write_predictions(path: Path, columns: dict[str, Tensor]) -> None:
    """Per-image columns (each (N,)) as a CSV file with a header, written atomically."""
    rows = zip(*(column.tolist() for column in columns.values()), strict=True)
    write_atomic(
        path, ",".join(columns) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows)
    )


def finetune(
    weight: Tensor, settings: PipelineSettings, config: SamplerConfig, devices: int
) -> QuantumClassifier:
    """Quantum-aware training of the transferred layer for ``finetune_epochs`` epochs.

    Returns the classifier at the epoch of best validation accuracy (``ModelCheckpoint``
    keeps it in ``out/checkpoints``); the learning curves go to ``out/logs/finetune``.
    """
    # Like the twin's, the step's batch is split between the processes, not multiplied:
    # the same steps per epoch and the same gradient (DDP averages) on any process count.
    per_process = process_batch(settings.finetune_batch_size, devices)
    data = MNISTDataModule(settings.data_dir, batch_size=per_process, seed=settings.seed)
    data.setup("fit")
    calibration = torch.stack([data.train_set[i][0] for i in range(CALIBRATION_IMAGES)])
    classifier = QuantumClassifier.from_twin(
        weight,
        coupling_scale=settings.coupling_scale,
        per_pixel_shift=settings.pixel_shift,
        config=config,
        estimator=settings.finetune_estimator,
        calibration_images=calibration,
        coupling_budget=settings.finetune_coupling_budget or None,
        lr=settings.finetune_learning_rate,
    )
    per_step = per_process * devices  # images of one step, all processes
    return fit_best_epoch(
        classifier,
        data,
        settings,
        devices,
        logs="finetune",
        checkpoint="finetuned-best",
        max_epochs=settings.finetune_epochs,
        limit_train_batches=epoch_batches(settings.finetune_images, per_step),
    )


def check_machine(
    cli: CommandLine, settings: PipelineSettings, sampler: SamplerConfig
) -> tuple[int, int]:
    """Processes and threads (:func:`machine_share`), or a command-line error if the batches
    cannot be split between the processes or the quantum test's ``sampler`` cannot run in
    decision mode."""
    try:
        check_decision(settings.decision_sigmas, num_classes, sampler)
    except ValueError as err:
        cli.error(f"--sampler: {err}")
    devices, threads = machine_share(settings.accelerator, settings.devices, settings.threads)
    names = ("batch_size", "finetune_batch_size")[: 2 if settings.finetune_epochs else 1]
    for name in names:
        if getattr(settings, name) < devices:
            cli.error(
                f"--{name} must be >= the {devices} devices (it is split between them), "
                f"got {getattr(settings, name)}"
            )
    return devices, threads


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline; returns 0 on success and 2 when MNIST is unusable.

    Bad settings, an unusable ``--out`` or ``--weights`` exit with status 2 before any work.
    """
    cli = command_line()
    parsed = cli.parse(argv)
    settings = parsed.settings
    devices, threads = check_machine(cli, settings, parsed.samplers["sampler"])
    try:
        loaded = None if settings.weights is None else load_twin_weight(settings.weights)
    except ValueError as err:
        cli.error(str(err))
    configure_process(threads)
    rank_zero_only(clear_outputs)(settings.out, OUTPUTS)
    L.seed_everything(settings.seed, workers=True, verbose=False)
    seconds: dict[str, float] = {}
    began = time.perf_counter()

    per_process = process_batch(settings.batch_size, devices)
    data = prepared_mnist(settings, per_process)
    if data is None:
        return 2

    twin = ClassicalTwin(penalty=settings.penalty, lr=settings.lr)
    trainer = make_trainer(settings, devices, logs="twin", max_epochs=settings.epochs)
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
    config = replace(parsed.samplers["sampler"], seed=settings.seed)
    evaluator = QuantumEvaluator(
        weight,
        coupling_scale=settings.coupling_scale,
        per_pixel_shift=settings.pixel_shift,
        config=config,
        decision_sigmas=settings.decision_sigmas,
    )
    seconds["transfer"] = time.perf_counter() - stage

    stage = time.perf_counter()
    data.setup("test")
    subset = quantum_subset(data.test_set, settings.quantum_test_size, settings.seed)
    loader = quantum_loader(subset, settings.quantum_batch_size)
    quantum_trainer = make_trainer(settings, devices)
    metrics = quantum_trainer.test(evaluator, dataloaders=loader, verbose=False)[0]
    seconds["quantum_test"] = time.perf_counter() - stage

    finetuned = None
    if settings.finetune_epochs:
        stage = time.perf_counter()
        finetune_config = replace(parsed.samplers["finetune_sampler"], seed=settings.seed)
        classifier = finetune(weight, settings, finetune_config, devices)
        seconds["finetune"] = time.perf_counter() - stage
        stage = time.perf_counter()
        finetuned_evaluator = QuantumEvaluator(
            weight,
            coupling_scale=settings.coupling_scale,
            per_pixel_shift=settings.pixel_shift,
            config=config,
            decision_sigmas=settings.decision_sigmas,
            couplings=classifier.couplings.cpu(),
        )
        finetuned = make_trainer(settings, devices).test(
            finetuned_evaluator, dataloaders=loader, verbose=False
        )[0]
        finetuned["predictions"] = finetuned_evaluator.predictions
        finetuned["layer"] = classifier.layer
        finetuned["logit_scale"] = float(classifier.logit_scale)
        seconds["finetuned_quantum_test"] = time.perf_counter() - stage
    if not quantum_trainer.is_global_zero:
        return 0

    stage = time.perf_counter()
    out = settings.out
    save_atomic(weight, out / "twin_weight.pt")
    save_atomic(evaluator.layer.state_dict(), out / "quantum_layer.pt")
    predictions = evaluator.predictions
    images_tested = len(predictions["index"])
    figures = ["mnist_weights.png", "mnist_samples.png", "mnist_confusion.png"]
    couplings = transferred_weight(weight, per_pixel_shift=settings.pixel_shift)
    plot_weights(weight, couplings, out / figures[0])
    evaluator.cpu()
    evaluator.layer.readout = "activity"  # the softmax of activities looks flat in a plot
    shown = range(min(6, len(subset)))
    samples = torch.stack([subset[i][0] for i in shown])
    with torch.no_grad():
        classical_scores = evaluator.classical_scores(samples).softmax(-1)
        quantum_scores = evaluator(samples)
    sample_labels = torch.tensor([subset[i][1] for i in shown])
    plot_samples(samples, sample_labels, classical_scores, quantum_scores, out / figures[1])
    matrices = {name: evaluator.confusion_matrices[name] for name in ("classical", "quantum")}
    plot_confusion(matrices, out / figures[2])
    mnist_index = torch.tensor(subset.indices)[predictions["index"]]
    columns = {
        "test_index": mnist_index,
        **{k: predictions[k] for k in ("label", "classical", "quantum", "exact")},
    }
    if finetuned is not None:
        save_atomic(finetuned["layer"].state_dict(), out / "finetuned_layer.pt")
        columns["finetuned"] = finetuned["predictions"]["quantum"]
        columns["finetuned_exact"] = finetuned["predictions"]["exact"]
    write_predictions(out / "predictions.csv", columns)
    write_atomic(out / "config.yaml", parsed.config)
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
        "coupling_scale": settings.coupling_scale,
        "per_pixel_shift": settings.pixel_shift,
        "chains": config.chains,
        "thermalization": config.thermalization,
        "sweeps": config.sweeps,
        "init": config.init,
        "max_sweeps": config.max_sweeps,
        "decision_sigmas": settings.decision_sigmas,
        "mean_sweeps": metrics["sweeps"],
        "quantum_batch_size": settings.quantum_batch_size,
        "epochs": settings.epochs,
        "penalty": settings.penalty,
        "weights_loaded_from": None if settings.weights is None else str(settings.weights),
        "seed": settings.seed,
        "accelerator": settings.accelerator,
        "devices": devices,
        "threads": torch.get_num_threads(),
        "config": "config.yaml",
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
                "finetune_estimator": settings.finetune_estimator,
                "finetuned_agreement": finetuned["agreement"],
                "finetune_epochs": settings.finetune_epochs,
                "finetune_images": settings.finetune_images,
                "finetune_lr": settings.finetune_learning_rate,
                "finetune_batch_size": process_batch(settings.finetune_batch_size, devices)
                * devices,
                "finetune_logit_scale": finetuned["logit_scale"],
                "finetune_coupling_budget": settings.finetune_coupling_budget,
            }
        )
        if settings.finetune_estimator == "monte_carlo":
            results["finetune_sampler"] = {
                "chains": finetune_config.chains,
                "thermalization": finetune_config.thermalization,
                "sweeps": finetune_config.sweeps,
            }
    write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    print_summary(results, settings)
    return 0


def print_summary(results: dict, settings: PipelineSettings) -> None:
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
    ]
    if "finetuned_quantum_accuracy" in results:
        rows += [
            (
                f"fine-tuned quantum accuracy ({n} images)",
                f"{results['finetuned_quantum_accuracy']:.4f}",
            ),
            (
                f"fine-tuned exact accuracy ({n} images)",
                f"{results['finetuned_exact_accuracy']:.4f}",
            ),
        ]
    rows += [
        ("agreement quantum vs classical", f"{results['agreement']:.4f}"),
        ("weights min / max", f"{results['weight_min']:.3g} / {results['weight_max']:.3g}"),
    ]
    rows += [(f"time: {name}", f"{value:.1f} s") for name, value in results["seconds"].items()]
    width = max(len(name) for name, _ in rows)
    print("\n" + "\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    out = settings.out
    print(f"\nwrote {out / 'results.json'}, its settings {out / 'config.yaml'} and figures")
    if n < 10_000:
        minutes = results["seconds_per_quantum_image"] * 10_000 / 60
        print(
            f"All 10 000 test images (quantum test ~{minutes:.0f} min with these settings and "
            f"{results['devices']} devices; each extra device or node divides it):\n"
            f"  qnn-train-then-transfer --config {out / 'config.yaml'} "
            f"--weights {out / 'twin_weight.pt'} --quantum_test_size 10000 --out {out}_full"
        )
