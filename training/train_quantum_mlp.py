"""Train a quantum MLP on MNIST through its twin, then test it by Monte Carlo.

Stages: (1) the twin's tables for the MLP's lattice (built once and cached; first, with
every core, so that the DDP processes load them); (2) the references: the linear twin
(non-negative logistic regression, the single quantum layer's classical twin) and a
classical MLP of the same sizes (or convolution) without sign constraints; (3) train a
``QuantumMLP`` (784 → hidden → 10, the hidden layer dense or convolutional) through its
twin (``training.QuantumMLPClassifier``), keeping the epoch of best validation accuracy;
(4) its twin accuracy on the whole test set; (5) the Monte Carlo test of the same
couplings with ``Trainer.test`` (DDP across ``--devices``), the twin on the same images
beside it; with ``--finetune_epochs N``, (5b) fine-tune the couplings through the Monte
Carlo's covariance gradients for N epochs (``--finetune_sampler.*``) and test them again
on the same images; (6) the twin against the Monte Carlo layer by layer on a few test
images; (7) figures and results.json.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from qnn_torch.config import SEED_LIMIT, check_int, check_number, check_same_lattice
from qnn_torch.experiments.cli import CommandLine
from qnn_torch.experiments.plotting import new_figure, savefig_atomic
from qnn_torch.functional.conv import ConvGeometry
from qnn_torch.functional.layer import check_decision
from qnn_torch.functional.twin import GRID, checked_grid, twin_tables
from qnn_torch.io import clear_outputs, save_atomic, write_atomic
from qnn_torch.simulate import check_conditional_every
from training.classical import ClassicalMLP, ClassicalTwin
from training.data import default_data_dir, default_mirror
from training.quantum import quantum_loader, quantum_subset
from training.quantum_mlp import (
    FINETUNE_MLP_CONFIG,
    MLP_CONFIG,
    QuantumMLPClassifier,
    layer_comparison,
    twin_accuracy,
)
from training.train_then_transfer import (
    DPI,
    check_job_settings,
    configure_process,
    epoch_batches,
    fit_best_epoch,
    machine_share,
    make_trainer,
    prepared_mnist,
    process_batch,
    write_predictions,
)

OUTPUTS = (  # results.json first: removed first, written last
    "results.json",
    "predictions.csv",
    "config.yaml",
    "quantum_mlp.pt",
    "learning_curves.png",
    "hidden_couplings.png",
    "logs/linear_twin",
    "logs/classical_mlp",
    "logs/twin_mlp",
    "checkpoints/twin-mlp-best.ckpt",
    "finetuned_quantum_mlp.pt",
    "logs/mlp_finetune",
    "checkpoints/finetuned-mlp-best.ckpt",
)


@dataclass(frozen=True)
class QuantumMLPSettings:
    """Settings of ``qnn-train-quantum-mlp``; the Monte Carlo test's sampler is ``--sampler.*``.

    Attributes:
        data_dir: MNIST root, holding MNIST/raw (default: $QNN_TORCH_DATA, else ./data).
        mnist_mirror: A folder holding MNIST/raw/*.gz, copied where data_dir lacks them
            (default: $QNN_TORCH_MNIST_MIRROR).
        hidden: Hidden quantum neurons of a dense hidden layer (unused with conv_channels).
        conv_channels: Channels of a convolutional hidden layer (0: the dense one): each
            channel's kernel of conv_kernel × conv_kernel pixels, shared by the positions
            conv_stride apart (qnn_torch.functional.conv); the classical reference gets the
            same convolution.
        conv_kernel: Kernel width in pixels of the convolutional hidden layer.
        conv_stride: Stride in pixels of the convolutional hidden layer.
        epochs: Training epochs of the quantum MLP's twin.
        lr: Initial Adam learning rate of the twin, cosine-annealed.
        batch_size: Images per training step, split between the processes.
        reference_epochs: Training epochs of the linear twin and of the classical MLP.
        train_images: Training images per epoch, for every model (0: all 55 000).
        twin_grid: Nodes per axis of the twin's tables (see qnn_torch.functional.twin.GRID).
        decision_sigmas: The Monte Carlo test samples each image in blocks of
            sampler.sweeps until its top class leads by this many standard errors, or up to
            sampler.max_sweeps (0: sampler.sweeps for every image).
        conditional_every: The Monte Carlo test measures the outputs every this many sweeps
            by their exact expectation given the hidden paths (Rao–Blackwell; 0: by their
            own paths, every sweep). It must divide sampler.sweeps and sampler.max_sweeps.
        quantum_test_size: Test images of the Monte Carlo test (a seeded random subset).
        quantum_batch_size: Images per sampler call.
        compared_images: Test images on which the twin and the Monte Carlo are compared
            neuron by neuron.
        finetune_epochs: Epochs of fine-tuning through the Monte Carlo gradients (0: none).
        finetune_images: Training images per fine-tuning epoch (0: all 55 000).
        finetune_lr: Initial Adam learning rate of fine-tuning, cosine-annealed.
        finetune_batch_size: Images per fine-tuning step, split between the processes.
        accelerator: Lightning accelerator: cpu, gpu or auto.
        devices: Processes or GPUs, DDP when > 1 (0: every core up to 8, or every GPU).
        threads: Torch CPU threads per process (default: cores / devices; 0: PyTorch's).
        seed: Seed of the couplings, of training, of the subset and of the sampler.
        out: Output folder.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    mnist_mirror: Path | None = field(default_factory=default_mirror)
    hidden: int = 128
    conv_channels: int = 0
    conv_kernel: int = 12
    conv_stride: int = 8
    epochs: int = 10
    lr: float = 2e-2
    batch_size: int = 128
    reference_epochs: int = 3
    train_images: int = 0
    twin_grid: tuple[int, ...] = GRID
    decision_sigmas: float = 3.0
    conditional_every: int = 10
    quantum_test_size: int = 10_000
    quantum_batch_size: int = 100
    compared_images: int = 16
    finetune_epochs: int = 0
    finetune_images: int = 0
    finetune_lr: float = 2e-3
    finetune_batch_size: int = 32
    accelerator: str = "cpu"
    devices: int = 0
    threads: int | None = None
    seed: int = 0
    out: Path = Path("outputs/train_quantum_mlp")

    def __post_init__(self) -> None:
        for name in ("hidden", "epochs", "batch_size", "reference_epochs", "conv_stride"):
            check_int(name, getattr(self, name), 1)
        for name in ("quantum_test_size", "quantum_batch_size", "compared_images"):
            check_int(name, getattr(self, name), 1)
        check_int("devices", self.devices, 0)
        for name in ("finetune_epochs", "finetune_images"):
            check_int(name, getattr(self, name), 0)
        check_int("finetune_batch_size", self.finetune_batch_size, 1)
        check_int("conditional_every", self.conditional_every, 0)
        check_int("conv_channels", self.conv_channels, 0)
        check_int("conv_kernel", self.conv_kernel, 1)
        try:
            self.conv  # noqa: B018 (the geometry checks the kernel against the image)
        except ValueError as err:
            raise ValueError(f"conv_kernel={self.conv_kernel}: {err}") from None
        check_int("train_images", self.train_images, 0)
        object.__setattr__(self, "twin_grid", checked_grid(self.twin_grid))
        check_int("seed", self.seed, 0)
        if self.seed >= SEED_LIMIT:
            raise ValueError(f"seed must be < 2**63, got {self.seed}")
        if self.threads is not None:
            check_int("threads", self.threads, 0)
        check_number("decision_sigmas", self.decision_sigmas)
        for name in ("lr", "finetune_lr"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        check_job_settings(self)

    @property
    def conv(self) -> ConvGeometry | None:
        """The convolutional hidden layer's geometry, or None for a dense one."""
        if not self.conv_channels:
            return None
        return ConvGeometry(
            image=28, channels=self.conv_channels, kernel=self.conv_kernel, stride=self.conv_stride
        )

    @property
    def hidden_neurons(self) -> int:
        """Neurons of the hidden layer, dense or convolutional."""
        return self.hidden if self.conv is None else self.conv.neurons


def command_line() -> CommandLine[QuantumMLPSettings]:
    """The command line (built per call: the data folder's default comes from the environment)."""
    return CommandLine(
        QuantumMLPSettings,
        __doc__.split("\n")[0],
        samplers={
            "sampler": (MLP_CONFIG, "The MLP's lattice and Monte Carlo test sampler"),
            "finetune_sampler": (FINETUNE_MLP_CONFIG, "Sampler of Monte Carlo fine-tuning steps"),
        },
    )


def plot_learning_curves(logs: Path, path: Path) -> None:
    """Training and validation accuracy of the twin per epoch, from its CSV log."""
    epochs: dict[str, dict[int, float]] = {"train_acc": {}, "val_acc": {}}
    with open(logs / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            for name, curve in epochs.items():
                if row.get(name):
                    curve[int(row["epoch"])] = float(row[name])
    fig, axes = new_figure(1, 1, (5.5, 3.8))
    ax = axes[0, 0]
    for name, curve in epochs.items():
        ax.plot([e + 1 for e in curve], list(curve.values()), marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("twin accuracy")
    ax.legend()
    savefig_atomic(fig, path, dpi=DPI)


def plot_hidden_couplings(excite: torch.Tensor, inhibit: torch.Tensor, path: Path) -> None:
    """Each hidden neuron's input couplings ε̂ − η̂ (N, 784) as a 28×28 image, or each
    channel's kernels (C, kh, kw) (red excites, blue inhibits), up to 64."""
    shown = min(64, excite.shape[0])
    shape = (28, 28) if excite.ndim == 2 else excite.shape[1:]
    columns = 8
    rows = -(-shown // columns)
    fig, axes = new_figure(rows, columns, (1.6 * columns, 1.6 * rows))
    signed = (excite - inhibit)[:shown]
    bound = float(signed.abs().max()) or 1.0
    for n, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if n < shown:
            ax.imshow(signed[n].reshape(shape), cmap="coolwarm", vmin=-bound, vmax=bound)
    savefig_atomic(fig, path, dpi=DPI)


def finetune(classifier: QuantumMLPClassifier, settings: QuantumMLPSettings, devices: int) -> None:
    """Train ``classifier`` (its ``train_estimator`` the Monte Carlo) for
    ``settings.finetune_epochs`` epochs in steps of ``settings.finetune_batch_size`` images
    (split between the processes), logging to ``out/logs/mlp_finetune``, and keep the
    epoch of best validation accuracy (its twin's)."""
    per_process = process_batch(settings.finetune_batch_size, devices)
    fit_best_epoch(
        classifier,
        prepared_mnist(settings, per_process),
        settings,
        devices,
        logs="mlp_finetune",
        checkpoint="finetuned-mlp-best",
        max_epochs=settings.finetune_epochs,
        limit_train_batches=epoch_batches(settings.finetune_images, per_process * devices),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; returns 0 on success and 2 when MNIST is unusable. Bad settings or an
    unusable ``--out`` exit with status 2 before any work."""
    cli = command_line()
    parsed = cli.parse(argv)
    settings = parsed.settings
    devices, threads = machine_share(settings.accelerator, settings.devices, settings.threads)
    for name in ("batch_size", "finetune_batch_size")[: 2 if settings.finetune_epochs else 1]:
        if getattr(settings, name) < devices:
            cli.error(f"--{name} must be >= the {devices} devices, got {getattr(settings, name)}")
    try:
        sampler = parsed.samplers["sampler"]
        finetune_config = replace(parsed.samplers["finetune_sampler"], seed=settings.seed)
        if settings.finetune_epochs:
            check_same_lattice("--finetune_sampler", finetune_config, "--sampler", sampler)
        check_decision(settings.decision_sigmas, 10, sampler)
        if settings.conditional_every:  # the test and the layer comparison, blocks or not
            check_conditional_every(settings.conditional_every, sampler, blocks=True)
    except ValueError as err:
        cli.error(str(err))
    rank_zero_only(clear_outputs)(settings.out, OUTPUTS)
    L.seed_everything(settings.seed, workers=True, verbose=False)
    config = replace(parsed.samplers["sampler"], seed=settings.seed)
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    per_process = process_batch(settings.batch_size, devices)
    data = prepared_mnist(settings, per_process)
    if data is None:
        return 2
    # Before the DDP processes start, with every core: the processes then load the tables.
    tables = twin_tables(
        config.n_time, config.time_extent, config.lam, config.n_kinks, settings.twin_grid
    )
    seconds["twin_tables"] = time.perf_counter() - began
    configure_process(threads)

    batches = epoch_batches(settings.train_images, per_process * devices)
    stage = time.perf_counter()
    references = {}
    for name, model in (
        ("linear_twin", ClassicalTwin()),
        ("classical_mlp", ClassicalMLP(settings.hidden_neurons, conv=settings.conv)),
    ):
        trainer = make_trainer(
            settings,
            devices,
            logs=name,
            max_epochs=settings.reference_epochs,
            limit_train_batches=batches,
        )
        trainer.fit(model, datamodule=data)
        references[name] = trainer.test(model, datamodule=data, verbose=False)[0]["test_acc"]
    seconds["references"] = time.perf_counter() - stage

    stage = time.perf_counter()
    model = {
        "sizes": (784, settings.hidden_neurons, 10),
        "config": config,
        "seed": settings.seed,
        "twin_grid": settings.twin_grid,
        "decision_sigmas": settings.decision_sigmas,
        "conditional_every": settings.conditional_every,
        "conv": settings.conv,
    }
    classifier = QuantumMLPClassifier(**model, lr=settings.lr)
    fit_best_epoch(
        classifier,
        data,
        settings,
        devices,
        logs="twin_mlp",
        checkpoint="twin-mlp-best",
        max_epochs=settings.epochs,
        limit_train_batches=batches,
    )
    seconds["twin_training"] = time.perf_counter() - stage

    stage = time.perf_counter()
    data.setup("test")
    twin_test = twin_accuracy(classifier, data.test_set)
    seconds["twin_test"] = time.perf_counter() - stage

    stage = time.perf_counter()
    subset = quantum_subset(data.test_set, settings.quantum_test_size, settings.seed)
    loader = quantum_loader(subset, settings.quantum_batch_size)
    quantum_trainer = make_trainer(settings, devices)
    metrics = quantum_trainer.test(classifier, dataloaders=loader, verbose=False)[0]
    seconds["quantum_test"] = time.perf_counter() - stage

    finetuned = None
    if settings.finetune_epochs:
        stage = time.perf_counter()
        finetuned = QuantumMLPClassifier(
            **model,
            lr=settings.finetune_lr,
            train_estimator="monte_carlo",
            train_sampler=finetune_config,
        )
        finetuned.load_state_dict(classifier.state_dict())
        finetune(finetuned, settings, devices)
        seconds["finetune"] = time.perf_counter() - stage
        stage = time.perf_counter()
        finetuned_metrics = make_trainer(settings, devices).test(
            finetuned, dataloaders=loader, verbose=False
        )[0]
        seconds["finetuned_quantum_test"] = time.perf_counter() - stage
    if not quantum_trainer.is_global_zero:
        return 0

    stage = time.perf_counter()
    compared = torch.stack(
        [subset[i][0] for i in range(min(settings.compared_images, len(subset)))]
    )
    layers = layer_comparison(classifier.mlp, compared.flatten(1))
    seconds["layer_comparison"] = time.perf_counter() - stage

    out = settings.out
    save_atomic(classifier.mlp.state_dict(), out / "quantum_mlp.pt")
    plot_learning_curves(out / "logs" / "twin_mlp", out / "learning_curves.png")
    mlp = classifier.mlp
    plot_hidden_couplings(
        mlp.excite[0].detach().cpu(), mlp.inhibit[0].detach().cpu(), out / "hidden_couplings.png"
    )
    predictions = classifier.predictions
    mnist_index = torch.tensor(subset.indices)[predictions["index"]]
    columns = {
        "test_index": mnist_index,
        **{k: predictions[k] for k in ("label", "quantum", "twin")},
    }
    if finetuned is not None:
        save_atomic(finetuned.mlp.state_dict(), out / "finetuned_quantum_mlp.pt")
        columns["finetuned"] = finetuned.predictions["quantum"]
        columns["finetuned_twin"] = finetuned.predictions["twin"]
    write_predictions(out / "predictions.csv", columns)
    write_atomic(out / "config.yaml", parsed.config)
    seconds["total"] = time.perf_counter() - began
    quantum_images = len(predictions["index"])
    results = {
        "quantum_accuracy": metrics["quantum_acc"],
        "quantum_images": quantum_images,
        "twin_accuracy": twin_test,
        "twin_accuracy_same_images": metrics["twin_acc"],
        "quantum_twin_agreement": metrics["agreement"],
        "linear_twin_accuracy": references["linear_twin"],
        "classical_mlp_accuracy": references["classical_mlp"],
        "hidden_neurons": settings.hidden_neurons,
        "mean_sweeps_per_image": metrics["sweeps"],
        "twin_error_bound": tables.error_bound,
        "layers": layers,
        "learning_curves": "learning_curves.png",
        "hidden_couplings": "hidden_couplings.png",
        "seconds": seconds,
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in settings.__dict__.items()},
            "sampler": config.as_state(),
        },
    }
    if finetuned is not None:
        results |= {
            "finetuned_quantum_accuracy": finetuned_metrics["quantum_acc"],
            "finetuned_twin_accuracy_same_images": finetuned_metrics["twin_acc"],
            "finetuned_quantum_twin_agreement": finetuned_metrics["agreement"],
            "finetuned_mean_sweeps_per_image": finetuned_metrics["sweeps"],
            "finetune_sampler": finetune_config.as_state(),
        }
    write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    print(
        f"quantum MLP: Monte Carlo {results['quantum_accuracy']:.4f} on {quantum_images} test "
        f"images (twin on the same images {results['twin_accuracy_same_images']:.4f}); twin "
        f"{twin_test:.4f} on all; linear twin {references['linear_twin']:.4f}; classical "
        f"MLP {references['classical_mlp']:.4f}; {seconds['total']:.0f} s"
    )
    if finetuned is not None:
        print(
            f"fine-tuned through the Monte Carlo: {results['finetuned_quantum_accuracy']:.4f} "
            f"on the same images (its twin {results['finetuned_twin_accuracy_same_images']:.4f})"
        )
    return 0
