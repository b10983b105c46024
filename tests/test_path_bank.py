"""The bank of equilibrium paths: chains started from it are in equilibrium at once."""

import dataclasses

import pytest
import torch

from qnn_torch import ColdStartWarning, Network, SamplerConfig, simulate
from qnn_torch.functional.activity_table import driven_activity
from qnn_torch.path_bank import BANK_NODES, PathBank, bank_paths_for, path_bank
from tests.helpers import PAPER, SMALL

# Paper-lattice drives of MNIST outputs, on and between the bank's nodes.
DRIVES = torch.cat([torch.tensor([0.0, 150.0, 1000.0]), torch.linspace(2000.0, 20000.0, 21)])


def relays(drives: torch.Tensor) -> Network:
    return Network().add_input("x").add_neuron("y").excite("x", "y", drives)


def measured(init: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Activities and errors at DRIVES measured over 100 sweeps from ``init`` without
    thermalisation, 8 chains."""
    config = SamplerConfig(**PAPER, chains=8, thermalization=0, sweeps=100, init=init)
    result = simulate(relays(DRIVES), config)
    return result.activity["y"].double(), result.stderr["y"]


def test_equilibrium_start_needs_no_thermalisation_at_the_paper_lattice():
    """Without a single discarded sweep, every activity is within 5σ of the exact one and
    their mean deviation within 4σ (chain errors with 7 degrees of freedom: variance 7/5);
    the spiking path, the former start, is far off (root mean square deviation above 4σ),
    and says so: a ColdStartWarning, and the estimates furthest off carry infinite
    errors."""
    exact = driven_activity(DRIVES, **PAPER)
    activity, stderr = measured("equilibrium")
    z = (activity - exact) / stderr
    pooled = float(z.mean() / (7 / 5 / z.numel()) ** 0.5)
    assert z.abs().max() < 5.0, f"z-scores {z.tolist()}"
    assert abs(pooled) < 4.0, f"mean deviation {pooled:.2f}σ (z-scores {z.tolist()})"
    with pytest.warns(ColdStartWarning, match="init='spikes' with thermalization=0"):
        spikes, spikes_stderr = measured("spikes")
    off = (spikes - exact) / stderr  # in the errors of the equilibrium start
    # Far off in both directions (too active at low drives, too quiet at high ones): its
    # root mean square, not its mean, whose signs cancel.
    assert off.abs().max() > 5.0 and float(off.square().mean().sqrt()) > 4.0
    assert spikes_stderr[off.abs() == off.abs().max()].isinf().all()


def test_chains_start_from_distinct_paths_of_the_nearest_node():
    """Network b's chain c starts from path π_b(c) of the node nearest each neuron's drive:
    distinct paths for its chains, one permutation for all its neurons."""
    nodes, paths, n_time = 5, 8, 4
    # Path p of node i holds the value 10·i + p everywhere.
    values = 10.0 * torch.arange(nodes)[:, None] + torch.arange(paths)[None, :]
    bank = PathBank(
        paths=values[..., None].expand(nodes, paths, n_time).contiguous(),
        drive_scale=1.0,
        max_drive=float(torch.expm1(torch.tensor(4.0))),  # node i at u = i
    )
    drive = torch.expm1(torch.tensor([[0.0, 1.4, 1.6], [4.0, 9.0, 2.0]]))  # u = 0, 1.4, ...
    start = bank.starting_paths(drive, 4, torch.Generator().manual_seed(0))
    assert start.shape == (2, 4, 3, n_time)
    node = (start[..., 0] // 10).long()  # (B, C, N)
    path = (start[..., 0] % 10).long()
    assert node[:, 0].tolist() == [[0, 1, 2], [4, 4, 2]]  # nearest in u, clamped at the top
    assert (node == node[:, :1]).all()
    for b in range(2):
        assert len(set(path[b, :, 0].tolist())) == 4  # distinct paths for the chains
        assert (path[b] == path[b, :, :1]).all()  # the same permutation for every neuron
    with pytest.raises(ValueError, match="chains=9 exceeds the bank's 8 paths"):
        bank.starting_paths(drive, 9, torch.Generator())


def test_bank_size_follows_the_chains_and_is_cached(monkeypatch, tmp_path):
    assert [bank_paths_for(c) for c in (2, 8, 9, 16, 17)] == [8, 8, 16, 16, 32]
    monkeypatch.setenv("QNN_TORCH_CACHE", str(tmp_path))
    from qnn_torch import path_bank as module

    module._build_bank.cache_clear()
    built = path_bank(**SMALL, max_drive=50.0, chains=12)
    assert built.paths.shape == (BANK_NODES, 16, SMALL["n_time"])
    assert len(list(tmp_path.glob("path_bank_*.pt"))) == 1
    module._build_bank.cache_clear()

    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt a bank that was on disk")

    monkeypatch.setattr(module, "_sample_bank", refuse)
    loaded = path_bank(**SMALL, max_drive=50.0, chains=12)
    torch.testing.assert_close(loaded.paths, built.paths, rtol=0, atol=0)
    module._build_bank.cache_clear()


def test_equilibrium_start_is_reproducible():
    config = SamplerConfig(**SMALL, chains=4, thermalization=10, sweeps=20, init="equilibrium")
    drives = torch.tensor([0.0, 40.0, 120.0])
    first, again = (simulate(relays(drives), config) for _ in range(2))
    assert torch.equal(first.activity["y"], again.activity["y"])
    other = simulate(relays(drives), dataclasses.replace(config, seed=1))
    assert not torch.equal(first.activity["y"], other.activity["y"])


@pytest.mark.cuda
def test_equilibrium_start_on_cuda():
    config = SamplerConfig(**SMALL, chains=4, sweeps=20, init="equilibrium", device="cuda")
    result = simulate(relays(torch.tensor([0.0, 120.0])), config)
    assert result.paths.device.type == "cuda"
