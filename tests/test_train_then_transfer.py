"""training.train_then_transfer: its command line (bad input fails before work, its YAML
reruns it), its figures, and smoke runs of scripts/train_then_transfer.py on real MNIST
(one process and DDP)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from matplotlib.figure import Figure

import training.data
from qnn_torch import QuantumNeuronLayer
from qnn_torch.io import clear_outputs
from tests.helpers import Numbered
from training import train_then_transfer
from training.data import MNIST_FILES
from training.finetune import FINETUNE_CONFIG, FINETUNE_LR
from training.quantum import IndexedBatches, quantum_subset
from training.train_then_transfer import QUANTUM_TEST_CONFIG, PipelineSettings, command_line
from training.transfer import transfer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_then_transfer.py"
OFFLINE = ROOT.parent / "shared" / "data"
# 40 images at the default sampler settings but 8 chains: a few seconds, and accurate enough
# to test (the default 64 chains start from a bank of 64 paths per drive, which takes ~100 s
# to build in each fresh cache; the tests share the 8-path bank).
QUANTUM = ["--quantum_test_size", "40", "--quantum_batch_size", "10", "--threads", "1",
           "--sampler.chains", "8"]  # fmt: skip
KEYS = {
    "classical_accuracy",
    "quantum_accuracy",
    "exact_quantum_accuracy",
    "classical_accuracy_same_images",
    "agreement",
    "quantum_images",
    "weight_min",
    "weight_max",
    "seconds",
    "coupling_scale",
    "chains",
    "sweeps",
    "thermalization",
}


# -- the command line ---------------------------------------------------------------------
@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No data folder or MNIST mirror from the environment; the working directory is
    ``tmp_path`` (so the default output folder is there). Returns it."""
    monkeypatch.delenv("QNN_TORCH_DATA", raising=False)
    monkeypatch.delenv("QNN_TORCH_MNIST_MIRROR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("MNIST was loaded before the arguments were validated")

    monkeypatch.setattr(train_then_transfer, "MNISTDataModule", refuse)


def exit_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error printed by ``train_then_transfer.main(argv)``, which must exit with 2."""
    with pytest.raises(SystemExit) as exit_info:
        train_then_transfer.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.usefixtures("no_data", "defaults")
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--sampler.chains", "1"], ["--sampler.chains must be an integer >= 2", "got 1"]),
        # Spellings of the first command line, renamed to the sampler groups.
        (["--chains", "1"], ["--sampler.chains must be an integer >= 2", "got 1"]),
        (["--chains=1"], ["--sampler.chains must be an integer >= 2", "got 1"]),
        (["--thermalization", "-3"], ["--sampler.thermalization", "got -3"]),
        (["--sampler.sweeps", "5", "--max-sweeps", "3"], ["--sampler.max_sweeps must be", "got 3"]),
        (["--max-sweeps", "1"], ["--sampler: decision_sigmas=3 needs", "max_sweeps=1, sweeps=1"]),
        (["--init", "bogus"], ["--sampler.init must be one of", "'bogus'"]),
        (["--finetune-sweeps", "0"], ["--finetune_sampler.sweeps", "got 0"]),
        (["--finetune_sampler.chains", "1"], ["--finetune_sampler.chains", "got 1"]),
        (["--seed", "-1"], ["--seed must be an integer >= 0", "got -1"]),
        (["--coupling-scale", "-5"], ["--coupling_scale", "got -5"]),
        (["--batch-size", "0"], ["--batch_size", "got 0"]),
        (["--quantum_test_size", "0"], ["--quantum_test_size must be an integer >= 1, got 0"]),
        (["--penalty", ".nan"], ["--penalty must be a finite number >= 0", "got nan"]),
        (["--penalty", "nan"], ["penalty", "nan"]),  # jsonargparse refuses a bare nan
        (["--finetune-coupling-budget", "-1"], ["--finetune_coupling_budget", "got -1"]),
        (["--finetune_estimator", "foo"], ["--finetune_estimator must be one of", "'foo'"]),
        (["--accelerator", "tpu"], ["--accelerator must be", "'tpu'"]),
        (["--mnist_mirror", "absent"], ["--mnist_mirror absent is not a folder"]),
        (["--out", ""], ["--out must not be empty"]),
        (
            ["--devices", "3", "--finetune-epochs", "1", "--finetune-batch-size", "2"],
            ["--finetune_batch_size must be >= the 3 devices", "got 2"],
        ),
    ],
)
def test_pipeline_rejects_bad_options_before_any_work(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    error = exit_error(argv, capsys)
    assert all(text in error for text in expected), error
    assert not Path("outputs").exists()


@pytest.mark.usefixtures("no_data")
def test_pipeline_rejects_an_unusable_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for out in (blocker, blocker / "sub"):
        assert f"--out {out}: cannot write there" in exit_error(["--out", str(out)], capsys)
    assert blocker.read_text() == ""


@pytest.mark.usefixtures("no_data")
def test_pipeline_checks_weights_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "results.json").write_text("{}")  # an earlier run's: not cleared on an error
    missing = tmp_path / "absent.pt"
    error = exit_error(["--weights", str(missing), "--out", str(tmp_path)], capsys)
    assert f"--weights {missing} does not exist" in error
    wrong = tmp_path / "wrong.pt"
    torch.save(torch.zeros(10, 783), wrong)
    error = exit_error(["--weights", str(wrong), "--out", str(tmp_path)], capsys)
    assert f"--weights {wrong} does not hold a (10, 784) weight tensor" in error
    assert (tmp_path / "results.json").read_text() == "{}"


@pytest.mark.usefixtures("defaults")
def test_print_config_reruns_as_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        command_line().parse(["--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "sampler:" in printed and "chains: 64" in printed
    assert yaml.safe_load(printed)["sampler"]["chains"] == QUANTUM_TEST_CONFIG.chains == 64
    config = tmp_path / "printed.yaml"
    config.write_text(printed)
    again = command_line().parse(["--config", str(config)])
    default = command_line().parse([])
    assert again.settings == default.settings == PipelineSettings()
    assert again.samplers == default.samplers
    assert again.samplers == {"sampler": QUANTUM_TEST_CONFIG, "finetune_sampler": FINETUNE_CONFIG}
    assert again.config == default.config
    changed = command_line().parse(["--config", str(config), "--sampler.chains", "4"])
    assert changed.samplers["sampler"].chains == 4  # later options override the file


@pytest.mark.usefixtures("defaults")
def test_the_first_command_lines_spellings_still_work() -> None:
    old = command_line().parse(
        [
            "--quantum-test-size", "40", "--no-pixel-shift", "--chains", "4", "--max-sweeps=50",
            "--init", "spikes", "--finetune-chains", "3", "--finetune-thermalization", "7",
        ]
    )  # fmt: skip
    new = command_line().parse(
        [
            "--quantum_test_size", "40", "--pixel_shift", "false", "--sampler.chains", "4",
            "--sampler.max_sweeps", "50", "--sampler.init", "spikes",
            "--finetune_sampler.chains", "3", "--finetune_sampler.thermalization", "7",
        ]
    )  # fmt: skip
    assert old.settings == new.settings == PipelineSettings(quantum_test_size=40, pixel_shift=False)
    assert old.samplers == new.samplers
    assert new.samplers["sampler"] == replace(
        QUANTUM_TEST_CONFIG, chains=4, max_sweeps=50, init="spikes"
    )
    assert new.samplers["finetune_sampler"] == replace(FINETUNE_CONFIG, chains=3, thermalization=7)


@pytest.mark.usefixtures("defaults")
def test_a_quantum_test_of_one_batch_is_split_between_two_devices() -> None:
    """500 images in batches of 500 on 2 processes used to fail after training the twin
    (fewer batches than processes); the images are now split between the processes (the
    two-process smoke run below runs such a split: 40 images in batches of 10 on 2)."""
    cli = command_line()
    parsed = cli.parse(["--quantum_test_size", "500", "--devices", "2"])
    settings = parsed.settings
    assert (settings.quantum_test_size, settings.quantum_batch_size) == (500, 500)
    assert train_then_transfer.check_machine(cli, settings, parsed.samplers["sampler"])[0] == 2
    subset = quantum_subset(Numbered(10_000), settings.quantum_test_size, settings.seed)
    shards = [
        list(IndexedBatches(subset, settings.quantum_batch_size, rank=rank, world_size=2))
        for rank in range(2)
    ]
    assert [[len(y) for _, y, _ in shard] for shard in shards] == [[250], [250]]
    seen = sorted(int(i) for shard in shards for x, _, _ in shard for i in x.flatten())
    assert seen == sorted(subset.indices)


def _fail_midway(self: Figure, target: object, **kwargs: object) -> None:
    Path(target).write_bytes(b"partial")  # type: ignore[arg-type]
    raise OSError("disk full")


def test_pipeline_figures_are_written_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mnist_confusion.png"
    path.write_bytes(b"old figure")
    monkeypatch.setattr(Figure, "savefig", _fail_midway)
    matrix = torch.eye(10, dtype=torch.long)
    with pytest.raises(OSError, match="disk full"):
        train_then_transfer.plot_confusion({"classical": matrix}, path)
    assert path.read_bytes() == b"old figure"
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_mnist_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.delenv("QNN_TORCH_MNIST_MIRROR", raising=False)
    monkeypatch.setattr(training.data, "MNIST", offline)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["--data_dir", str(tmp_path / "data"), "--threads", "0", "--out", str(tmp_path / "out")]
    assert train_then_transfer.main(argv) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "data" / "MNIST" / "raw") in error
    assert all(name in error for name in MNIST_FILES)
    assert "Traceback" not in error


# -- smoke runs on real MNIST -------------------------------------------------------------
def _has_mnist(root: Path) -> bool:
    return all((root / "MNIST" / "raw" / name).exists() for name in MNIST_FILES)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's extracted MNIST, or a fresh folder the script fills from ../shared/data."""
    if _has_mnist(ROOT / "data"):
        return ROOT / "data"
    if _has_mnist(OFFLINE):
        return tmp_path_factory.mktemp("data")
    pytest.skip("MNIST is neither in data/ nor in ../shared/data")


def run_script(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_outputs(out: Path) -> tuple[dict, list[dict]]:
    results = json.loads((out / "results.json").read_text())
    with (out / "predictions.csv").open() as file:
        return results, list(csv.DictReader(file))


def load_layer(path: Path) -> QuantumNeuronLayer:
    """A QuantumNeuronLayer(784, 10) holding the state_dict saved at ``path``."""
    layer = QuantumNeuronLayer(784, 10)
    layer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return layer


@pytest.fixture(scope="module")
def single_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    result = run_script(
        "--data_dir", str(data_dir), "--epochs", "1", "--devices", "1", *QUANTUM, "--out", str(out)
    )  # fmt: skip
    assert "quantum accuracy (40 images)" in result.stdout
    assert "--quantum_test_size 10000" in result.stdout
    return out


@pytest.mark.slow
def test_single_process_pipeline(single_run: Path) -> None:
    results, predictions = read_outputs(single_run)
    assert set(results) >= KEYS
    assert results["classical_accuracy"] >= 0.9
    assert results["weights_nonnegative"]
    assert results["weight_min"] >= -1e-3 * results["weight_max"]
    assert results["quantum_images"] == 40 == len(predictions)
    assert results["quantum_accuracy"] >= 0.75
    assert results["agreement"] >= 0.75
    assert results["coupling_scale"] == 100
    cap = QUANTUM_TEST_CONFIG.max_sweeps
    assert results["decision_sigmas"] == 3 and 1 < results["mean_sweeps"] <= cap
    # The exact estimator is monotone in the drive and the transfer keeps the argmax.
    assert [row["exact"] for row in predictions] == [row["classical"] for row in predictions]
    assert results["exact_quantum_accuracy"] == results["classical_accuracy_same_images"]
    for name in results["figures"]:
        assert (single_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The quantum test's layer, as evaluated: the twin's transfer, with its sampler.
    weight = torch.load(single_run / "twin_weight.pt", weights_only=True)
    layer = load_layer(single_run / "quantum_layer.pt")
    torch.testing.assert_close(layer.weight, transfer(weight).weight, rtol=0, atol=0)
    assert layer.decision_sigmas == 3 and layer.config.max_sweeps == cap
    assert layer.config.chains == 8
    assert (single_run / "logs" / "twin" / "metrics.csv").is_file()
    assert not (single_run / "finetuned_layer.pt").exists()
    # config.yaml reruns the command with the same settings.
    rerun = command_line().parse(["--config", str(single_run / "config.yaml")])
    assert rerun.settings.quantum_test_size == 40 and rerun.settings.out == single_run
    assert rerun.samplers["sampler"] == replace(QUANTUM_TEST_CONFIG, chains=8)
    assert not list(single_run.glob(".*.tmp"))


@pytest.mark.slow
def test_ddp_two_processes_gives_identical_predictions_and_fine_tunes(
    data_dir: Path, single_run: Path, tmp_path: Path
) -> None:
    """The quantum test under DDP with 2 CPU processes, with the twin of the 1-process run.

    Batches are fixed contiguous blocks dealt whole to the processes and seeded by their
    first image's index, so each image is simulated with the same random numbers however
    the data is sharded: predictions, accuracies and agreement equal the 1-process run's
    exactly, and the logged torchmetrics hold all 40 images (aggregated over processes).
    The fine-tuning stage trains through the exact estimator under DDP (gradients
    averaged) and is evaluated on the same images with the sampler and the exact estimator.
    """
    run_script(
        "--data_dir",
        str(data_dir),
        "--weights",
        str(single_run / "twin_weight.pt"),
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        *QUANTUM,
        *("--finetune_epochs", "1", "--finetune_images", "200", "--finetune_batch_size", "50"),
        *("--finetune_coupling_budget", "0.8"),
        "--out",
        str(tmp_path),
    )
    single, single_predictions = read_outputs(single_run)
    ddp, ddp_predictions = read_outputs(tmp_path)
    assert ddp["devices"] == 2
    assert ddp["quantum_images"] == 40
    columns = list(single_predictions[0])
    assert [{k: row[k] for k in columns} for row in ddp_predictions] == single_predictions
    assert ddp["finetuned_quantum_accuracy"] >= 0.75
    assert ddp["finetuned_exact_accuracy"] >= 0.75
    assert ddp["finetune_estimator"] == "exact" and ddp["finetune_lr"] == FINETUNE_LR["exact"]
    assert {row["finetuned"] for row in ddp_predictions} <= {str(d) for d in range(10)}
    for name in ("config.yaml", "logs/twin/metrics.csv", "logs/finetune/metrics.csv"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / "finetuned-best.ckpt").is_file()
    load_layer(tmp_path / "quantum_layer.pt")
    finetuned = load_layer(tmp_path / "finetuned_layer.pt")
    assert finetuned.estimator == "exact"
    couplings = finetuned.weight.detach()
    assert couplings.shape == (10, 784) and (couplings >= 0).all()
    # The bound holds: four steps move each coupling by at most ~0.08 (the unbounded sum
    # stays within ~10 % of the transferred one), so without it the sum would exceed 0.8×.
    assert ddp["finetune_coupling_budget"] == 0.8
    twin = torch.load(tmp_path / "twin_weight.pt", weights_only=True)
    transferred = transfer(twin).weight.detach().sum()
    assert float(couplings.sum()) <= 0.8 * float(transferred) * (1 + 1e-6)
    for key in ("quantum_accuracy", "classical_accuracy_same_images", "agreement"):
        assert ddp[key] == single[key], key
    assert ddp["classical_accuracy"] == pytest.approx(single["classical_accuracy"], abs=1e-4)


def test_a_gpu_accelerator_without_cuda_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        train_then_transfer.main(["--accelerator", "gpu", "--out", str(tmp_path)])
    assert "accelerator 'gpu': no CUDA device is available" in capsys.readouterr().err


def test_only_the_pipelines_own_outputs_are_cleared(tmp_path: Path) -> None:
    """--out . is the user's folder: other logs and checkpoints stay."""
    for name in ("logs/twin/metrics.csv", "logs/mine/notes.txt", "checkpoints/keep.ckpt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "results.json").write_text("{}")
    clear_outputs(tmp_path, train_then_transfer.OUTPUTS)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["checkpoints/keep.ckpt", "logs/mine/notes.txt"]
