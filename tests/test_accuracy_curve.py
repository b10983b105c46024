"""training.accuracy_curve: bad settings, outputs and weights stop it before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qnn_torch.experiments.cli import CommandLine
from training import accuracy_curve


def _no_data(*args: object, **kwargs: object) -> None:
    raise AssertionError("MNIST was loaded before the arguments were validated")


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accuracy_curve, "MNISTDataModule", _no_data)


def exit_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error printed by ``accuracy_curve.main(argv)``, which must exit with status 2."""
    with pytest.raises(SystemExit) as exit_info:
        accuracy_curve.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.usefixtures("no_data")
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--images", "-5"], ["--images", "got -5"]),
        (["--images", "10001"], ["--images", "got 10001"]),
        (["--ks", "100", "0"], ["--ks", "0.0"]),
        (["--ks", "[100, 0]"], ["--ks", "0.0"]),
        (["--sweeps", "25", "0"], ["--sweeps", "got 0"]),
        (["--chains", "1"], ["--chains", "got 1"]),
        (["--default-chains", "1"], ["--default_chains", "got 1"]),
        (["--default_chains=1"], ["--default_chains", "got 1"]),
        (["--thermalization", "-1"], ["--thermalization", "got -1"]),
        (["--batch-size", "0"], ["--batch_size", "got 0"]),
        (["--threads", "-1"], ["--threads", "got -1"]),
    ],
)
def test_accuracy_curve_rejects_bad_options_before_any_work(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    error = exit_error(argv, capsys)
    assert all(text in error for text in expected), error


@pytest.mark.usefixtures("no_data")
def test_accuracy_curve_checks_out_and_weights_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert f"--out {blocker}: cannot write there" in exit_error(["--out", str(blocker)], capsys)
    missing = tmp_path / "absent.pt"
    error = exit_error(["--weights", str(missing), "--out", str(tmp_path)], capsys)
    assert f"--weights {missing} does not exist" in error
    wrong = tmp_path / "wrong.pt"
    torch.save(torch.zeros(10, 783), wrong)
    error = exit_error(["--weights", str(wrong), "--out", str(tmp_path)], capsys)
    assert f"--weights {wrong} does not hold a (10, 784) weight tensor" in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "wrong.pt"]


def test_accuracy_curve_takes_lists_as_words_or_yaml(tmp_path: Path) -> None:
    cli = CommandLine(accuracy_curve.CurveSettings, "curve")
    out = ["--out", str(tmp_path)]
    words = cli.parse(["--ks", "20", "50", "--chains", "2", "4", *out]).settings
    yaml_lists = cli.parse(["--ks", "[20, 50]", "--chains", "[2, 4]", *out]).settings
    assert words == yaml_lists
    assert words.ks == (20.0, 50.0) and words.chains == (2, 4)
