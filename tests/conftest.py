"""Shared helpers for the tests: exact references for small and paper lattices."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

from qnn_torch.functional.exact import single_neuron_activity
from qnn_torch.functional.physics import kink_path

# A small lattice where the neuron tunnels and the local sampler equilibrates quickly.
SMALL = {"n_time": 32, "time_extent": 2.0, "lam": 60.0, "n_kinks": 2}
PAPER = {"n_time": 512, "time_extent": 0.7, "lam": 5000.0, "n_kinks": 4}

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pytest_configure(config: pytest.Config) -> None:
    """Exact-activity tables go to a cache of this session (shared with the xdist workers
    and the subprocesses the pipeline tests start), not the user's: every run builds and
    checks them anew. Each worker gets an equal share of the cores for torch's threads."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        if "qnn_torch_cache" in worker:  # else the controller's, inherited with its environment
            os.environ["QNN_TORCH_CACHE"] = worker["qnn_torch_cache"]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // worker["workercount"]))
        return
    config.qnn_torch_cache = tempfile.mkdtemp(prefix="qnn_torch_cache_")
    os.environ["QNN_TORCH_CACHE"] = config.qnn_torch_cache


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: WorkerController) -> None:
    """xdist: tell each worker the session's table cache."""
    node.workerinput["qnn_torch_cache"] = node.config.qnn_torch_cache


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "qnn_torch_cache"):  # the controller (or a run without xdist)
        shutil.rmtree(config.qnn_torch_cache, ignore_errors=True)


def exact_activity(
    lattice: dict, drives: torch.Tensor, inhibitions: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact activity of one neuron driven by one active input: drive ε, inhibition η."""
    return single_neuron_activity(
        drives,
        inhibitions,
        kink_path(**lattice, dtype=torch.float64),
        time_extent=lattice["time_extent"],
        lam=lattice["lam"],
    )


def assert_within(result_activity, result_stderr, expected, sigmas: float = 4.0) -> None:
    """Every Monte Carlo estimate lies within ``sigmas`` standard errors of the exact value.

    The errors must be finite: an infinite one (an untrusted estimate) would pass vacuously.
    """
    assert torch.isfinite(torch.as_tensor(result_stderr)).all(), f"errors {result_stderr}"
    z = (torch.as_tensor(result_activity).double() - expected) / torch.as_tensor(result_stderr)
    assert torch.all(z.abs() < sigmas), f"z-scores {z.tolist()} (estimates {result_activity})"
