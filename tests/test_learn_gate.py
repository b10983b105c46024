"""qnn_torch.experiments.learn_gate: its command line and a short real run (AND gate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qnn_torch.experiments import learn_gate


def test_old_sampler_spellings_are_renamed_to_the_sampler_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parse = learn_gate.COMMAND_LINE.parse
    out = ["--out", str(tmp_path)]
    new = parse(["--sampler.n_time", "64", "--sampler.chains", "4", "--sampler.sweeps=90", *out])
    old = parse(["--n-time", "64", "--chains", "4", "--sweeps=90", *out])
    assert old.samplers == new.samplers and old.settings == new.settings
    sampler = new.samplers["sampler"]
    assert (sampler.n_time, sampler.chains, sampler.sweeps) == (64, 4, 90)
    assert sampler.thermalization == learn_gate.LEARN_CONFIG.thermalization
    for argv in (["--chains", "1"], ["--sampler.chains", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            parse([*argv, *out])
        assert exit_info.value.code == 2
        assert "--sampler.chains must be an integer >= 2, got 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--gate", "nand"], "--gate must be one of"),
        (["--init-range", "600", "300"], "--init_range must satisfy"),
        (["--steps", "0"], "--steps must be an integer >= 1, got 0"),
        (["--lr", "-1"], "--lr must be a finite number > 0, got -1"),
    ],
)
def test_bad_options_exit_with_status_2(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        learn_gate.main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_learns_the_and_gate_and_writes_its_outputs(tmp_path, capsys):
    code = learn_gate.main(
        [
            "--gate", "and", "--seed", "1", "--init_range", "300", "600",
            "--sampler.n_time", "64", "--sampler.thermalization", "50", "--sampler.sweeps", "100",
            "--steps", "15", "--lr", "0.3", "--verify_sweeps", "200", "--stop_after_passing", "2",
            "--threads", "0", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    report = json.loads((tmp_path / "learn_gate.json").read_text())
    assert (tmp_path / "learn_gate.png").stat().st_size > 10_000
    assert not list(tmp_path.glob(".*.tmp"))
    printed = capsys.readouterr().out
    assert "PASSED" in printed if code == 0 else "FAILED" in printed
    assert report["verification"]["passed"] is (code == 0)
    assert code == 0, printed
    history = report["history"]
    assert history["strengths"][0][0] < 600 < history["final_strengths"]["strength"]
    assert report["verification"]["patterns"]["11"]["state"] == "high"
    settings = report["settings"]
    assert (settings["n_time"], settings["thermalization"], settings["sweeps"]) == (64, 50, 100)
    # config.yaml reruns the command: it parses back to the same settings and sampler.
    again = learn_gate.COMMAND_LINE.parse(["--config", str(tmp_path / "config.yaml")])
    assert again.settings.gate == "and" and again.settings.init_range == (300.0, 600.0)
    assert again.samplers["sampler"].n_time == 64
