"""qnn_torch.experiments.reproduce_paper: its command line, and the truth tables, figures
and checks of a quick reproduction run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qnn_torch import circuits
from qnn_torch.experiments import reproduce_paper

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce_paper.py"
T = circuits.THRESHOLDS


def test_module_is_import_safe_and_covers_the_patterns():
    assert callable(reproduce_paper.main)
    patterns = reproduce_paper.detector_patterns()
    targets = {name for name, (_, vertical) in patterns.items() if vertical}
    assert targets == {"vertical_col1", "vertical_col2"}
    for name in ("vertical_col0", "vertical_col3", "diagonal", "antidiagonal", "blank", "full"):
        assert name in patterns
    assert sum(name.startswith("horizontal") for name in patterns) == 4
    assert sum(name.startswith("random") for name in patterns) >= 3


def test_command_line_takes_lists_flags_and_refuses_unknown_experiments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parse = reproduce_paper.COMMAND_LINE.parse
    settings = parse(["--only", "and", "or", "--quick", "--out", str(tmp_path)]).settings
    assert settings.only == ("and", "or") and settings.quick is True
    assert settings.out == tmp_path
    assert parse(["--only", "[xor]", "--out", str(tmp_path)]).settings.only == ("xor",)
    assert parse(["--out", str(tmp_path)]).settings == reproduce_paper.PaperSettings(out=tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        parse(["--only", "and", "nand", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--only must name experiments of" in capsys.readouterr().err


# -- quick reproduction -----------------------------------------------------------------
@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("paper")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode in (0, 1), run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    results["_out"] = out
    results["_stdout"] = run.stdout
    return results


def high(entry: dict) -> bool:
    return T.state(entry["activity"], entry["stderr"]) == "high"


def low(entry: dict) -> bool:
    return T.state(entry["activity"], entry["stderr"]) == "low"


@pytest.mark.slow
def test_an_interrupted_run_leaves_no_results_beside_new_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous run's results and figures go before any work, results.json comes last:
    an interrupted run never looks complete, nor mixes its figures with old results."""
    for name in ("results.json", "results.md", "fig05_relay_activity.png", "config.yaml"):
        (tmp_path / name).write_text("from an earlier run")
    (tmp_path / "notes.txt").write_text("the user's")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(reproduce_paper.RUNNERS, "relay", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce_paper.main(["--only", "neuron", "relay", "--quick", "--out", str(tmp_path)])
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == ["fig01_instanton_action.png", "fig02_free_path.png", "notes.txt"]


def test_quick_run_writes_figures_tables_and_thresholds(quick):
    out = quick["_out"]
    assert quick["quick"] is True and quick["lattice"]["n_time"] == 128
    assert quick["thresholds"] == {"low": T.low, "high": T.high}
    for name in quick["figures"]:
        assert name.startswith("fig") and (out / name).stat().st_size > 0
    assert sorted(quick["figures"]) == sorted(reproduce_paper.FIGURES)  # all cleared first
    assert (out / "results.md").read_text() in quick["_stdout"]
    assert all(quick["checks"].values()), quick["checks"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["quick"] is True and config["out"] == str(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("gate", "on"),
    [("AND", {"11"}), ("OR", {"01", "10", "11"}), ("XOR", {"01", "10"})],
)
def test_quick_gate_truth_tables(quick, gate, on):
    table = quick["gates"][gate]
    assert set(table) == set(circuits.TRUTH_TABLE)
    for pattern, entry in table.items():
        assert (high if pattern in on else low)(entry), (gate, pattern, entry)


@pytest.mark.slow
def test_quick_not_gate(quick):
    assert high(quick["not"]["inhibition_off"]), quick["not"]
    assert low(quick["not"]["inhibition_on"]), quick["not"]


@pytest.mark.slow
def test_quick_chain_is_opaque_then_transparent(quick):
    chain = quick["chain"]
    kc, baseline = chain["critical_k"], chain["baseline"]
    assert abs(baseline - 0.13) < 0.02
    rows = list(zip(chain["k"], chain["activity"], chain["stderr"], strict=True))
    below = [(a, s) for k, a, s in rows if k <= 0.9 * kc]
    above = [(a, s) for k, a, s in rows if k >= 1.2 * kc]
    assert below and above
    for a, s in below:
        assert abs(a - baseline) + 2 * s < 0.1, (a, s)
    for a, s in above:
        assert a - 2 * s > 0.5, (a, s)


@pytest.mark.slow
def test_quick_detector_ranks_middle_vertical_lines_first(quick):
    detector = quick["detector"]
    targets = [p for p in detector.values() if p["vertical"]]
    others = [p for p in detector.values() if not p["vertical"]]
    assert len(targets) == 2 and len(others) >= 12
    assert min(p["activity"] - 2 * p["stderr"] for p in targets) > max(
        p["activity"] + 2 * p["stderr"] for p in others
    )
    assert all(high(p) for p in targets)
