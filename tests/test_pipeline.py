"""Smoke runs of scripts/train_then_transfer.py on real MNIST: one process and DDP."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import training.data
from training import train_then_transfer
from training.data import MNIST_FILES
from training.finetune import FINETUNE_LR
from training.transfer import transfer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_then_transfer.py"
OFFLINE = ROOT.parent / "shared" / "data"
# 40 images at the default sampler settings: a few seconds, and accurate enough to test.
QUANTUM = ["--quantum-test-size", "40", "--quantum-batch-size", "10", "--threads", "1"]
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


@pytest.fixture(scope="module")
def single_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    result = run_script(
        "--data-dir", str(data_dir), "--epochs", "1", "--devices", "1", *QUANTUM, "--out", str(out)
    )  # fmt: skip
    assert "quantum accuracy (40 images)" in result.stdout
    assert "--quantum-test-size 10000" in result.stdout
    return out


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
    assert results["decision_sigmas"] == 3 and 20 <= results["mean_sweeps"] <= 600
    # The exact estimator is monotone in the drive and the transfer keeps the argmax.
    assert [row["exact"] for row in predictions] == [row["classical"] for row in predictions]
    assert results["exact_quantum_accuracy"] == results["classical_accuracy_same_images"]
    for name in results["figures"]:
        assert (single_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (single_run / "twin_weight.pt").exists()
    assert not list(single_run.glob(".*.tmp"))


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
        "--data-dir",
        str(data_dir),
        "--weights",
        str(single_run / "twin_weight.pt"),
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        *QUANTUM,
        *("--finetune-epochs", "1", "--finetune-images", "200", "--finetune-batch-size", "50"),
        *("--finetune-coupling-budget", "0.8"),
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
    couplings = torch.load(tmp_path / "finetuned_couplings.pt")
    assert couplings.shape == (10, 784) and (couplings >= 0).all()
    # The bound holds: four steps move each coupling by at most ~0.08 (the unbounded sum
    # stays within ~10 % of the transferred one), so without it the sum would exceed 0.8×.
    assert ddp["finetune_coupling_budget"] == 0.8
    transferred = transfer(torch.load(tmp_path / "twin_weight.pt")).weight.detach().sum()
    assert float(couplings.sum()) <= 0.8 * float(transferred) * (1 + 1e-6)
    for key in ("quantum_accuracy", "classical_accuracy_same_images", "agreement"):
        assert ddp[key] == single[key], key
    assert ddp["classical_accuracy"] == pytest.approx(single["classical_accuracy"], abs=1e-4)


def test_missing_mnist_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = train_then_transfer

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(script, "OFFLINE_MNIST", tmp_path / "absent")
    monkeypatch.setattr(training.data, "MNIST", offline)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert script.main(["--data-dir", str(tmp_path / "data"), "--threads", "0"]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "data" / "MNIST" / "raw") in error
    assert all(name in error for name in MNIST_FILES)
    assert "Traceback" not in error
