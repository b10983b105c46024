"""Measurements pooled over chains from several starts: the circuits' validation protocol.

A network is simulated once per start (``config`` with ``init`` = the start and seed
``config.seed + i``), and the chains of all starts are pooled into one mean and standard
error, so that a start the run has not forgotten shows up in the error. The largest gap
between two starts' means, in standard errors of their difference, is kept as a
diagnostic of equilibration. The paper's circuits (``qnn-reproduce-paper``) and learned
gates (:func:`~qnn_torch.learning.verify_truth_table`) are validated this way, with
:data:`VALIDATION_CONFIG`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from qnn_torch.config import SamplerConfig
from qnn_torch.functional.observables import chain_mean_and_error, gap_in_sigmas
from qnn_torch.network import Network
from qnn_torch.simulate import SimulationResult, simulate

STARTS = ("vacuum", "saw")
"""The starts whose chains are pooled: the vacuum φ ≡ 1 and the paper's saw φ_t = t mod 2."""

VALIDATION_MOVES = {"algorithm": "local+multilevel+cluster", "cluster_every": 1}
"""The moves of the validation: every move in every sweep (near the chain's critical k the
network is bistable, and local moves plus a cluster update per sweep settle it)."""

VALIDATION_CONFIG = SamplerConfig(chains=8, thermalization=2000, sweeps=2000, **VALIDATION_MOVES)
"""Per start, at the paper's lattice: the settings with which the circuits were validated."""


@dataclass(frozen=True)
class PooledMeasurement:
    """Activities of a (batched) network pooled over the chains of S starts, C chains each.

    ``activity`` and ``stderr`` (*batch, N) follow ``names``; ``chain_activity``
    (*batch, S·C, N) holds the chains of the starts in order; ``start_gap_sigma``
    (*batch, N) is the largest gap between two starts' means in standard errors of their
    difference (0 for one start, +inf where a start's error is); ``runs`` are the
    simulations of the starts, in order.
    """

    names: tuple[str, ...]
    activity: Tensor
    stderr: Tensor
    chain_activity: Tensor
    start_gap_sigma: Tensor
    runs: tuple[SimulationResult, ...]


def simulate_from_starts(
    network: Network,
    config: SamplerConfig = VALIDATION_CONFIG,
    starts: Sequence[str] = STARTS,
    *,
    record_profile: bool = False,
) -> PooledMeasurement:
    """Simulate ``network`` once per start and pool the chains (see the module doc)."""
    if isinstance(starts, str) or not starts:
        raise ValueError(f"starts must name at least one start, got {starts!r}")
    runs = tuple(
        simulate(
            network,
            replace(config, init=start, seed=config.seed + i),
            record_profile=record_profile,
        )
        for i, start in enumerate(starts)
    )
    per_start = [run.chain_activity.detach().cpu() for run in runs]
    chains = torch.cat(per_start, dim=-2)
    activity, stderr = chain_mean_and_error(chains, dim=-2)
    gap = torch.zeros_like(activity)
    means = [chain_mean_and_error(c, dim=-2) for c in per_start]
    for (mean_1, error_1), (mean_2, error_2) in itertools.combinations(means, 2):
        gap = torch.maximum(gap, gap_in_sigmas(mean_1, error_1, mean_2, error_2))
    return PooledMeasurement(
        names=runs[0].names,
        activity=activity,
        stderr=stderr,
        chain_activity=chains,
        start_gap_sigma=gap,
        runs=runs,
    )
