"""The fused Triton local sweep against exact results: on CUDA, and on CPU through Triton's
interpreter, which must be chosen before Triton is imported (hence a fresh process each)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qnn_torch import SamplerConfig, simulate
from qnn_torch.functional import fused_local
from tests.helpers import SMALL, assert_within, exact_activity

pytest.importorskip("triton")  # before the helper module, which defines a Triton kernel
from tests.interpreted_fused_local import DRIVES, INHIBITIONS, fields_of, relays

ROOT = Path(__file__).resolve().parents[1]


def interpreted(case: str, tmp_path: Path) -> dict:
    """The results of ``case`` of tests/interpreted_fused_local.py, run interpreted."""
    out = tmp_path / "results.pt"
    subprocess.run(
        [sys.executable, "-m", "tests.interpreted_fused_local", case, str(out)],
        cwd=ROOT,
        env={**os.environ, "TRITON_INTERPRET": "1", "QNN_TORCH_FUSED_LOCAL": "1"},
        check=True,
    )
    return torch.load(out, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_interpreted_kernel_matches_exact_with_drive_and_inhibition(dtype, tmp_path):
    results = interpreted(f"exact {dtype}", tmp_path)
    assert results["fused sweeps"] == 400  # the kernel ran every local sweep
    expected = exact_activity(SMALL, DRIVES, INHIBITIONS)
    assert_within(results["activity"], results["stderr"], expected)
    assert 0.4 < results["acceptance"] < 0.6  # the width was tuned towards 0.5


def test_interpreted_kernel_is_deterministic_and_shares_noise_in_a_row(tmp_path):
    results = interpreted("contract", tmp_path)
    assert results["fused sweeps"] == 60
    paths = results["paths"]
    assert torch.equal(paths, results["again"])
    assert not torch.equal(paths, results["other seed"])
    # Unlinked outputs of equal drive in one row draw the same numbers: identical paths;
    # the third, of another drive, moves differently.
    a, b, c = (paths[..., k, :] for k in range(3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert results["supports unlinked"] and not results["supports linked"]
    assert not results["supports strided"]  # the eager sweep takes strided paths
    assert "links True" in results["linked error"]


def test_interpreted_kernel_is_the_eager_move_site_by_site(tmp_path):
    # One sweep of both parities, replayed in eager torch from the same Philox words and
    # sampler.local_log_ratio, float64, with drive and input inhibition: identical paths
    # and acceptance counts, with independent and with shared noise.
    results = interpreted("direct", tmp_path)
    for noise in ("shared False", "shared True"):
        assert results[noise]["largest difference"] == 0.0
        assert results[noise]["accepted"] == results[noise]["replayed accepted"] > 0


def test_compiled_kernel_is_for_cuda_only_and_can_be_turned_off(monkeypatch):
    phi = torch.zeros(2, 3, 8)
    monkeypatch.setattr(fused_local, "_SETTING", "")
    assert not fused_local.supports(phi, fields_of(phi, linked=False))  # CPU: eager
    monkeypatch.setattr(fused_local, "_INTERPRETED", True)
    assert not fused_local.supports(phi, fields_of(phi, linked=False))  # not asked for
    monkeypatch.setattr(fused_local, "_SETTING", "1")
    assert fused_local.supports(phi, fields_of(phi, linked=False))
    monkeypatch.setattr(fused_local, "_SETTING", "0")
    assert not fused_local.supports(phi, fields_of(phi, linked=False))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_kernel_matches_exact_and_is_deterministic(dtype):
    phi = torch.zeros(1, 1, SMALL["n_time"], device="cuda")
    assert fused_local.supports(phi, fields_of(phi, linked=False))
    config = SamplerConfig(
        **SMALL,
        chains=256,
        thermalization=2000,
        sweeps=2000,
        algorithm="local",
        dtype=dtype,
        device="cuda",
    )
    result = simulate(relays(DRIVES, INHIBITIONS), config)
    assert_within(
        result.activity["y"], result.stderr["y"], exact_activity(SMALL, DRIVES, INHIBITIONS)
    )
    again = simulate(relays(DRIVES, INHIBITIONS), config)
    assert torch.equal(result.paths, again.paths)
