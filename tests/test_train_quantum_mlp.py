"""training.train_quantum_mlp: bad settings fail before any work, and a small real run of
scripts/train_quantum_mlp.py on MNIST writes every output."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qnn_torch import QuantumMLP
from qnn_torch.functional.conv import ConvGeometry
from tests.test_train_then_transfer import _has_mnist
from training import train_quantum_mlp, train_then_transfer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_quantum_mlp.py"
OFFLINE = ROOT.parent / "shared" / "data"
KEYS = {
    "quantum_accuracy",
    "quantum_images",
    "twin_accuracy",
    "twin_accuracy_same_images",
    "linear_twin_accuracy",
    "classical_mlp_accuracy",
    "layers",
    "learning_curves",
    "hidden_couplings",
    "seconds",
    "config",
}
# A small lattice, a small grid and few images: about a minute on one core.
SMALL_RUN = [
    "--devices", "1", "--threads", "1", "--epochs", "1", "--reference_epochs", "1",
    "--train_images", "1024", "--hidden", "6", "--quantum_test_size", "12",
    "--quantum_batch_size", "6", "--compared_images", "2",
    "--sampler.lam", "60", "--sampler.time_extent", "2", "--sampler.chains", "4",
    "--sampler.thermalization", "20", "--sampler.sweeps", "40",
    "--twin_grid", "[9, 3, 5, 3, 17, 9, 5]",
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hidden", "0"], "hidden"),
        (["--epochs", "0"], "epochs"),
        (["--lr", "-1"], "lr"),
        (["--train_images", "-5"], "train_images"),
        (["--twin_grid", "[1, 2]"], "twin_grid"),
        (["--out", ""], "out"),
        (["--sampler.chains", "1"], "chains"),
        (["--conditional_every", "-1"], "conditional_every"),
        (["--conditional_every", "7"], "conditional_every=7 must divide config.sweeps=20"),
        (["--conv_channels", "-1"], "conv_channels"),
        (["--conv_channels", "2", "--conv_kernel", "29"], "conv_kernel"),
        (["--conv_channels", "2", "--conv_stride", "0"], "conv_stride"),
        (["--finetune_epochs", "-1"], "finetune_epochs"),
        (["--finetune_lr", "0"], "finetune_lr"),
        (["--finetune_epochs", "1", "--finetune_batch_size", "0"], "finetune_batch_size"),
        (["--finetune_epochs", "1", "--finetune_sampler.chains", "1"], "chains"),
        (
            ["--finetune_epochs", "1", "--finetune_sampler.lam", "100"],
            "--finetune_sampler.lam=100.0 must be --sampler.lam=200.0",
        ),
    ],
)
def test_bad_settings_exit_before_work(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the settings were checked")

    # The job loads MNIST through train_then_transfer.prepared_mnist.
    monkeypatch.setattr(train_then_transfer, "MNISTDataModule", refuse)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train_quantum_mlp.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def run_small(tmp_path_factory: pytest.TempPathFactory, *argv: str) -> Path:
    """The output folder of a small run of the script with ``SMALL_RUN`` and ``argv``."""
    if _has_mnist(ROOT / "data"):
        data_dir = ROOT / "data"
    elif _has_mnist(OFFLINE):
        data_dir = tmp_path_factory.mktemp("data")
    else:
        pytest.skip("MNIST is neither in data/ nor in ../shared/data")
    out = tmp_path_factory.mktemp("quantum_mlp")
    command = [sys.executable, str(SCRIPT), "--data_dir", str(data_dir), *SMALL_RUN, *argv]
    result = subprocess.run(
        [*command, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_small(tmp_path_factory)


def test_small_run_writes_whole_outputs(small_run: Path) -> None:
    results = json.loads((small_run / "results.json").read_text())
    assert set(results) >= KEYS
    assert results["quantum_images"] == 12
    for key in ("quantum_accuracy", "twin_accuracy", "twin_accuracy_same_images"):
        assert 0.0 <= results[key] <= 1.0
    assert results["linear_twin_accuracy"] > 0.5  # learnt something from 1024 images
    assert [layer["neurons"] for layer in results["layers"]] == [6, 10]
    assert results["config"]["sampler"]["lam"] == 60.0  # the settings actually used
    with (small_run / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 12 and set(rows[0]) == {"test_index", "label", "quantum", "twin"}
    for name in ("learning_curves.png", "hidden_couplings.png", "config.yaml"):
        assert (small_run / name).stat().st_size > 0
    mlp = QuantumMLP((784, 6, 10))
    mlp.load_state_dict(torch.load(small_run / "quantum_mlp.pt", weights_only=True))
    assert mlp.twin_grid == (9, 3, 5, 3, 17, 9, 5) and mlp.config.lam == 60.0
    assert all((w >= 0).all() for w in mlp.parameters())


def test_small_run_fine_tuned_through_the_monte_carlo(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    out = run_small(
        tmp_path_factory,
        "--finetune_epochs", "1", "--finetune_images", "64", "--finetune_batch_size", "16",
        "--finetune_sampler.lam", "60", "--finetune_sampler.time_extent", "2",
        "--finetune_sampler.thermalization", "5", "--finetune_sampler.sweeps", "10",
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["finetuned_quantum_accuracy"] <= 1.0
    assert 0.0 <= results["finetuned_twin_accuracy_same_images"] <= 1.0
    assert results["finetune_sampler"]["sweeps"] == 10
    with (out / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 12 and {"finetuned", "finetuned_twin"} <= set(rows[0])
    transferred, finetuned = QuantumMLP((784, 6, 10)), QuantumMLP((784, 6, 10))
    transferred.load_state_dict(torch.load(out / "quantum_mlp.pt", weights_only=True))
    finetuned.load_state_dict(torch.load(out / "finetuned_quantum_mlp.pt", weights_only=True))
    pairs = zip(transferred.parameters(), finetuned.parameters(), strict=True)
    # ε̂ of both layers and η̂ of the first moved; the hidden-output η̂ stays (the twin's).
    assert [not torch.equal(a, b) for a, b in pairs] == [True, True, True, False]
    assert all((w >= 0).all() for w in finetuned.parameters())
    assert (out / "logs" / "mlp_finetune" / "metrics.csv").stat().st_size > 0


def test_small_convolutional_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two channels of 14×14 kernels, 7 pixels apart: 2·3·3 = 18 hidden neurons."""
    out = run_small(
        tmp_path_factory, "--conv_channels", "2", "--conv_kernel", "14", "--conv_stride", "7"
    )
    results = json.loads((out / "results.json").read_text())
    assert results["hidden_neurons"] == 18 and results["quantum_images"] == 12
    assert [layer["neurons"] for layer in results["layers"]] == [18, 10]
    assert 0.0 <= results["classical_mlp_accuracy"] <= 1.0
    conv = ConvGeometry(image=28, channels=2, kernel=14, stride=7)
    mlp = QuantumMLP((784, 18, 10), conv=conv)
    mlp.load_state_dict(torch.load(out / "quantum_mlp.pt", weights_only=True))
    assert mlp.excite[0].shape == (2, 14, 14) and all((w >= 0).all() for w in mlp.parameters())
    assert (out / "hidden_couplings.png").stat().st_size > 0
