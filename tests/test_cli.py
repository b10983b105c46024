"""Command lines and outputs of the scripts' library modules: bad input fails before work."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qnn_torch import benchmark_sampler
from qnn_torch.config import SamplerConfig
from qnn_torch.functional import physics
from qnn_torch.io import atomic_path, save_atomic, savefig_atomic, write_atomic
from training import accuracy_curve, train_then_transfer
from training.quantum import QuantumEvaluator, quantum_loader


def test_evaluating_one_image_gives_one_prediction() -> None:
    """CatMetric returns a 0-d tensor for a single value; the predictions stay 1-d."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.rand(10, 784, generator=generator)
    image = torch.rand(1, 28, 28, generator=generator)
    config = SamplerConfig(chains=2, thermalization=0, sweeps=1)
    evaluator = QuantumEvaluator(weight, coupling_scale=100.0, config=config)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.test(evaluator, dataloaders=quantum_loader([(image, 3)], 10), verbose=False)
    assert {name: value.shape for name, value in evaluator.predictions.items()} == {
        name: (1,) for name in ("index", "label", "classical", "quantum", "exact")
    }
    assert evaluator.predictions["label"].tolist() == [3]


def _fail_midway(self: Figure, target: object, **kwargs: object) -> None:
    Path(target).write_bytes(b"partial")  # type: ignore[arg-type]
    raise OSError("disk full")


def test_atomic_outputs_replace_whole_files_or_leave_the_old_ones(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a" / "results.json", '{"x": 1}\n')
    save_atomic(torch.arange(3), tmp_path / "w.pt")
    fig = Figure()
    FigureCanvasAgg(fig)
    savefig_atomic(fig, tmp_path / "figure.png")
    assert (tmp_path / "a" / "results.json").read_text() == '{"x": 1}\n'
    assert torch.equal(torch.load(tmp_path / "w.pt"), torch.arange(3))
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    old = tmp_path / "w.pt"
    with pytest.raises(RuntimeError), atomic_path(old) as temp:
        temp.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert torch.equal(torch.load(old), torch.arange(3))
    assert not list(tmp_path.rglob(".*.tmp"))


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


def _no_data(*args: object, **kwargs: object) -> None:
    raise AssertionError("MNIST was loaded before the arguments were validated")


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("a measurement ran before the arguments were validated")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--chains", "1"], ["--chains", "got 1"]),
        (["--thermalization", "-3"], ["--thermalization", "got -3"]),
        (["--seed", "-1"], ["--seed", "got -1"]),
        (["--finetune-sweeps", "0"], ["--finetune-sweeps", "got 0"]),
        (["--coupling-scale", "-5"], ["--coupling-scale", "got -5"]),
        (["--batch-size", "0"], ["--batch-size", "got 0"]),
        (["--penalty", "nan"], ["--penalty", "got nan"]),
        (["--finetune-coupling-budget", "-1"], ["--finetune-coupling-budget", "got -1"]),
        (
            ["--devices", "3", "--finetune-epochs", "1", "--finetune-batch-size", "2"],
            ["--finetune-batch-size must be >= the 3 devices", "got 2"],
        ),
    ],
)
def test_pipeline_rejects_bad_options_before_any_work(
    argv: list[str],
    expected: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(train_then_transfer, "MNISTDataModule", _no_data)
    with pytest.raises(SystemExit) as exit_info:
        train_then_transfer.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert all(text in error for text in expected), error


def test_pipeline_rejects_an_unusable_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(train_then_transfer, "MNISTDataModule", _no_data)
    blocker = tmp_path / "file"
    blocker.write_text("")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(SystemExit):
            train_then_transfer.main(["--out", str(out)])
        assert f"--out {out}" in capsys.readouterr().err
    assert blocker.read_text() == ""


def test_pipeline_checks_weights_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(train_then_transfer, "MNISTDataModule", _no_data)
    missing = tmp_path / "absent.pt"
    assert train_then_transfer.main(["--weights", str(missing), "--out", str(tmp_path)]) == 2
    assert f"--weights {missing} does not exist" in capsys.readouterr().err
    wrong = tmp_path / "wrong.pt"
    torch.save(torch.zeros(10, 783), wrong)
    assert train_then_transfer.main(["--weights", str(wrong), "--out", str(tmp_path)]) == 2
    assert f"--weights {wrong} does not hold a (10, 784)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--images", "-5"], ["--images", "got -5"]),
        (["--images", "10001"], ["--images", "got 10001"]),
        (["--ks", "100", "0"], ["--ks", "got 0.0"]),
        (["--sweeps", "25", "0"], ["--sweeps", "got 0"]),
        (["--chains", "1"], ["--chains", "got 1"]),
        (["--default-chains", "1"], ["--default-chains", "got 1"]),
        (["--thermalization", "-1"], ["--thermalization", "got -1"]),
        (["--batch-size", "0"], ["--batch-size", "got 0"]),
        (["--threads", "-1"], ["--threads", "got -1"]),
    ],
)
def test_accuracy_curve_rejects_bad_options_before_any_work(
    argv: list[str],
    expected: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(accuracy_curve, "MNISTDataModule", _no_data)
    with pytest.raises(SystemExit) as exit_info:
        accuracy_curve.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert all(text in error for text in expected), error


def test_accuracy_curve_checks_out_and_weights_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(accuracy_curve, "MNISTDataModule", _no_data)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        accuracy_curve.main(["--out", str(blocker)])
    assert f"--out {blocker}" in capsys.readouterr().err
    missing = tmp_path / "absent.pt"
    assert accuracy_curve.main(["--weights", str(missing), "--out", str(tmp_path)]) == 2
    assert f"--weights {missing} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--repeats", "0"], ["--repeats", "got 0"]),
        (["--neurons", "0"], ["--neurons", "got 0"]),
        (["--chains", "1"], ["--chains", "got 1"]),
        (["--sweeps", "9"], ["--sweeps", "got 9"]),
        (["--local-sweeps", "-1"], ["--local-sweeps", "got -1"]),
        (["--images", "0"], ["--images", "got 0"]),
        (["--threads", "-2"], ["--threads", "got -2"]),
        (["--devices", "foo"], ["--devices", "'foo'"]),
    ],
)
def test_benchmark_rejects_bad_options_before_any_work(
    argv: list[str],
    expected: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for stage in ("throughput", "efficiency", "gradient_overhead", "margin_noise"):
        monkeypatch.setattr(benchmark_sampler, stage, _no_work)
    with pytest.raises(SystemExit) as exit_info:
        benchmark_sampler.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert all(text in error for text in expected), error


def test_benchmark_rejects_an_unusable_output_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for stage in ("throughput", "efficiency", "gradient_overhead", "margin_noise"):
        monkeypatch.setattr(benchmark_sampler, stage, _no_work)
    with pytest.raises(SystemExit):
        benchmark_sampler.main(["--out", str(tmp_path)])
    assert f"--out {tmp_path}" in capsys.readouterr().err


def test_benchmark_reference_sweep_uses_the_double_well(monkeypatch: pytest.MonkeyPatch) -> None:
    """The naive sweep's potential comes from physics.double_well (one home per formula)."""
    calls = []

    def counted(phi: torch.Tensor, lam: float) -> torch.Tensor:
        calls.append(lam)
        return physics.double_well(phi, lam)

    monkeypatch.setattr(benchmark_sampler, "double_well", counted)
    phi = torch.ones(2, 8)
    benchmark_sampler.naive_local_sweep(
        phi, torch.zeros(2), torch.zeros(8), lam=50.0, spacing=0.1, width=0.1,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert calls and set(calls) == {50.0}
