"""qnn_torch.experiments.benchmark_sampler: its command line, and its reference sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from qnn_torch import SamplerConfig
from qnn_torch.experiments import benchmark_sampler
from qnn_torch.functional import physics

STAGES = ("throughput", "efficiency", "gradient_overhead", "margin_noise")


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("a measurement ran before the arguments were validated")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--repeats", "0"], ["--repeats", "got 0"]),
        (["--neurons", "0"], ["--neurons", "got 0"]),
        (["--chains", "1"], ["--chains must be an integer >= 2", "got 1"]),
        (["--sweeps", "9"], ["--sweeps", "got 9"]),
        (["--local-sweeps", "-1"], ["--local_sweeps", "got -1"]),
        (["--images", "0"], ["--images", "got 0"]),
        (["--threads", "-2"], ["--threads", "got -2"]),
        (["--devices", "foo"], ["--devices", "'foo'"]),
        (["--sections", "throughput", "speed"], ["--sections must name some of", "speed"]),
        (["--out", ""], ["--out must not be empty"]),
    ],
)
def test_benchmark_rejects_bad_options_before_any_work(
    argv: list[str],
    expected: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for stage in STAGES:
        monkeypatch.setattr(benchmark_sampler, stage, _no_work)
    with pytest.raises(SystemExit) as exit_info:
        benchmark_sampler.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert all(text in error for text in expected), error


def test_benchmark_rejects_an_unusable_output_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for stage in STAGES:
        monkeypatch.setattr(benchmark_sampler, stage, _no_work)
    with pytest.raises(SystemExit) as exit_info:
        benchmark_sampler.main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"--out {tmp_path}: cannot write there" in capsys.readouterr().err


def test_benchmark_runs_the_chosen_sections_and_writes_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    for stage in STAGES:
        monkeypatch.setattr(
            benchmark_sampler, stage, lambda *args, stage=stage, **kwargs: calls.append(stage) or []
        )
    out = tmp_path / "bench.json"
    argv = ["--sections", "margin", "throughput", "--devices", "cpu", "--out", str(out)]
    assert benchmark_sampler.main(argv) == 0
    assert calls == ["throughput", "margin_noise"]
    assert out.is_file()
    config = yaml.safe_load((tmp_path / "bench.config.yaml").read_text())
    assert config["sections"] == ["margin", "throughput"] and config["devices"] == ["cpu"]


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


def test_the_linked_benchmark_network_has_a_quantum_mlp_s_shape() -> None:
    """Issue 20's linked network: 64 hidden neurons driven by the input, each exciting the 10
    outputs; one set of drives per image."""
    network = benchmark_sampler.mlp_shaped_network(3).compile(SamplerConfig())
    assert network.drive.shape == (3, 74)
    assert int(network.excite[0].ne(0).sum()) == 64 * 10
    hidden = network.drive[:, network.drive[0] > 0]
    assert hidden.shape == (3, 64) and not torch.equal(hidden[0], hidden[1])
