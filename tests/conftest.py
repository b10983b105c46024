"""pytest hooks: a table cache of this session, torch threads per xdist worker, the
``cuda`` marker's skip, and the ``compiling`` fixture. Helpers shared by the tests are in
tests/helpers.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController


def pytest_configure(config: pytest.Config) -> None:
    """Exact-activity tables go to a cache of this session (shared with the xdist workers
    and the subprocesses the pipeline tests start), not the user's: every run builds and
    checks them anew. Each worker gets an equal share of the cores for torch's threads."""
    # Eager moves unless asked otherwise: compiling each variant of a move costs 10-60 s
    # (the generator graph about 40 s cold), so only the tests of the compiled moves compile
    # them (they set QNN_TORCH_COMPILE=1). The suite's small runs draw their words for many
    # sweeps per generator call, so eager Threefry costs them little.
    os.environ.setdefault("QNN_TORCH_COMPILE", "0")
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped where no CUDA device is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def compiling(monkeypatch):
    """Compiled moves, with room for every variant the tests compile: dynamo keeps 8 graphs
    of a function by default, and past them runs it eagerly, which these tests would not
    notice."""
    import torch._dynamo.config as dynamo_config

    from qnn_torch.functional import compiled

    monkeypatch.setenv(compiled.COMPILE_ENV, "1")
    limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    with dynamo_config.patch(**{limit: 64}):
        yield
