"""Equilibrium paths of one driven neuron over a grid of drives: warm starts for chains.

A neuron driven with amplitude α feels the field α·g_t·φ_t² (see
:mod:`qnn_torch.functional.activity_table`). A chain started from a path drawn in
equilibrium at a nearby drive α' begins within about |A(α) − A(α')| of equilibrium in
activity, where the spiking path (``init="spikes"``, activity 1) begins up to ~1.2 away and
needs ~100 sweeps at the paper's lattice.

:func:`path_bank` samples, once per lattice, P paths at each of ``BANK_NODES`` drives
α_i = α₀·(e^{u_i} − 1), u_i evenly spaced on [0, log(1 + α_max/α₀)] (the activity
table's variable, in which A is smooth: neighbouring nodes differ by ≲ 0.01 in activity
at the paper's lattice). The sampler builds it: one network of G unlinked neurons, one per
node, with P chains, from the spiking path, ``BANK_THERMALIZATION`` sweeps of the default
moves. The bank is kept in memory and on disk (:func:`qnn_torch.cache.load_or_build`).

Any starting paths leave the Markov chains exact; a warm start only shortens the
thermalisation they need (measured at the paper's lattice, 256 drives in 500–24 500, 8
chains × 40 sweeps: from the bank with no thermalisation the mean deviation from the exact
activity was +0.0008 ± 0.0012, against +0.0050 from the spiking path after 100 sweeps).
"""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from qnn_torch import engine
from qnn_torch.cache import load_or_build, source_digest
from qnn_torch.config import SamplerConfig
from qnn_torch.functional import physics, sampler
from qnn_torch.functional.activity_table import (
    DRIVE_SCALE_PER_LAM,
    drive_at_fraction,
    drive_fraction,
    table_range,
)
from qnn_torch.functional.physics import input_spike
from qnn_torch.network import independent_outputs

BANK_NODES = 512
BANK_THERMALIZATION = 400
MIN_BANK_PATHS = 8  # paths per node: at least the chains of a network, a power of two


@dataclass(frozen=True)
class PathBank:
    """Equilibrium paths ``paths`` (G, P, Nt) float32 CPU of one neuron at the drives
    α_i = ``drive_scale``·(e^{u_i} − 1), u_i = i·log(1 + ``max_drive``/``drive_scale``)/(G − 1)."""

    paths: Tensor
    drive_scale: float
    max_drive: float

    def nearest_node(self, drive: Tensor) -> Tensor:
        """Index (...) int64 of the node nearest each drive (...) in u = log(1 + α/α₀)."""
        nodes = self.paths.shape[0]
        at = drive_fraction(
            drive.detach().double().clamp_min(0.0), self.drive_scale, self.max_drive
        )
        return (at * (nodes - 1)).round().clamp_(0, nodes - 1).long()

    def starting_paths(self, drive: Tensor, chains: int, generator: torch.Generator) -> Tensor:
        """Starting paths (B, C, N, Nt) float32 of networks with drives ``drive`` (B, N).

        Neuron n of network b, chain c, starts from path π_b(c) of the node nearest
        α_{b,n}, with π_b a random permutation of the P paths (``generator``, CPU): the
        chains of a network start from distinct, independent paths, and its neurons share
        π_b, as they share their random numbers. Needs ``chains`` ≤ P.
        """
        bank_paths = self.paths.shape[1]
        if chains > bank_paths:
            raise ValueError(f"chains={chains} exceeds the bank's {bank_paths} paths per drive")
        node = self.nearest_node(drive.cpu())  # (B, N)
        order = torch.rand(drive.shape[0], bank_paths, generator=generator).argsort(-1)
        pick = order[:, :chains, None]  # (B, C, 1)
        device = drive.device
        return _paths_on(self.paths, device)[node[:, None, :].to(device), pick.to(device)]


@functools.lru_cache(maxsize=4)
def _paths_on(paths: Tensor, device: torch.device) -> Tensor:
    """The bank's paths on ``device``: copied there once, so that starts are gathered there
    (on a GPU, not on one CPU thread followed by a copy of every start)."""
    return paths.to(device)


def bank_paths_for(chains: int) -> int:
    """Paths per node of a bank serving ``chains`` chains: a power of two ≥ 8."""
    return max(MIN_BANK_PATHS, 1 << max(chains - 1, 0).bit_length())


def path_bank(
    n_time: int, time_extent: float, lam: float, n_kinks: int, *, max_drive: float, chains: int
) -> PathBank:
    """The bank of this lattice covering [0, :func:`table_range` (``max_drive``)], with
    :func:`bank_paths_for` (``chains``) paths per node (built once, see the module doc)."""
    top = table_range(max_drive, lam)
    return _build_bank(n_time, float(time_extent), float(lam), n_kinks, top, bank_paths_for(chains))


@functools.lru_cache(maxsize=8)
def _build_bank(
    n_time: int, time_extent: float, lam: float, n_kinks: int, top: float, bank_paths: int
) -> PathBank:
    # Everything that builds the bank: the sampler's moves and loop, its settings, the network.
    builders = ("qnn_torch.engine", "qnn_torch.config", "qnn_torch.network")
    code = source_digest(
        sys.modules[__name__], sampler, physics, *map(importlib.import_module, builders)
    )
    key = [n_time, time_extent, lam, n_kinks, top, bank_paths, BANK_NODES, code]

    def build() -> dict[str, object]:
        return _sample_bank(n_time, time_extent, lam, n_kinks, top, bank_paths)

    def sound(stored: dict[str, object]) -> bool:
        paths = stored["paths"]
        shape = (BANK_NODES, bank_paths, n_time)
        return paths.shape == shape and bool(torch.isfinite(paths).all())

    return PathBank(**load_or_build("path_bank", key, build, sound))


def _sample_bank(
    n_time: int, time_extent: float, lam: float, n_kinks: int, top: float, bank_paths: int
) -> dict[str, object]:
    """The bank's fields: one network of BANK_NODES unlinked neurons at the node drives,
    ``bank_paths`` chains, BANK_THERMALIZATION sweeps from the spiking path."""
    config = SamplerConfig(
        n_time=n_time,
        time_extent=time_extent,
        lam=lam,
        n_kinks=n_kinks,
        chains=bank_paths,
        thermalization=BANK_THERMALIZATION,
        sweeps=1,
        init="spikes",
    )
    scale = DRIVE_SCALE_PER_LAM * lam
    at = torch.linspace(0.0, 1.0, BANK_NODES, dtype=torch.float64)
    drive = drive_at_fraction(at, scale, top).float()
    network = independent_outputs(drive[None], *input_spike(n_time, time_extent, lam, n_kinks))
    # One measurement sweep: only the paths are read.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", engine.StuckChainWarning)
        start = engine.fixed_start(network, config)
        offsets = torch.Generator().manual_seed(config.seed)
        out = engine.run(network, config, start, offsets, fixed=True)
        paths = out.paths[0].transpose(0, 1).contiguous()
    return {"paths": paths, "drive_scale": scale, "max_drive": top}
