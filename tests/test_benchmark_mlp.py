"""qnn_torch.experiments.benchmark_mlp: its command line, and a quick run of every section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qnn_torch.experiments import benchmark_mlp


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--sections", "speed"], "sections must name some of"),
        (["--regime_inputs", "0"], "regime_inputs"),
        (["--cost_images", "0"], "cost_images"),
        (["--out", ""], "out must not be empty"),
    ],
)
def test_bad_options_stop_before_any_work(argv, expected, monkeypatch, capsys):
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a measurement ran before the arguments were validated")

    for stage in ("chains", "regime", "cost"):
        monkeypatch.setattr(benchmark_mlp, stage, no_work)
    with pytest.raises(SystemExit) as stopped:
        benchmark_mlp.main(argv)
    assert stopped.value.code == 2
    assert expected in capsys.readouterr().err


def test_quick_run_writes_every_section(tmp_path: Path, capsys):
    out = tmp_path / "mlp.json"
    assert benchmark_mlp.main(["--quick", "--regime_inputs", "2", "--cost_images", "2",
                               "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    sections = {row["section"] for row in report["rows"]}
    assert sections == set(benchmark_mlp.SECTIONS) and report["meta"]["lattice"] == "small"
    assert out.with_suffix(".config.yaml").exists()
    chain = next(r for r in report["rows"] if r["section"] == "chains")
    # The back-reaction: the hidden neuron in the chain spikes less than alone.
    assert chain["hidden_mean_field"] < chain["hidden_alone"]
    assert "regime" in capsys.readouterr().out
