"""The counter-based local sweep: exact against the transfer matrix, the same numbers
whatever the layout of the rows, and the same paths compiled and eager."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from qnn_torch import Network, SamplerConfig
from qnn_torch.functional import compiled
from qnn_torch.functional.physics import input_spike, potential_sum
from qnn_torch.functional.sampler import (
    LatticeFields,
    counter_local_half_sweep,
    counter_local_sweep,
)
from tests.helpers import SMALL, assert_within, exact_activity


def fields_of(network: Network, chains: int, dtype: torch.dtype) -> LatticeFields:
    """The lattice fields of ``network``'s chains, chains fastest (rows b·C + c)."""
    config = SamplerConfig(**SMALL, dtype=dtype)
    c = network.compile(config)
    independent = c.excite is None and c.inhibit is None

    def rows(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.repeat_interleave(chains, 0)

    return LatticeFields(
        lam=config.lam,
        spacing=config.spacing,
        profile=c.profile,
        drive=rows(c.drive),
        input_inhibition=rows(c.input_inhibition) if c.input_inhibition.ne(0).any() else None,
        excite=rows(c.excite),
        inhibit=rows(c.inhibit),
        color_bounds=c.color_bounds,
        shared_noise=independent,
    )


def relays(drives: torch.Tensor, inhibitions: torch.Tensor) -> Network:
    net = Network().add_input("x").add_neuron("y")
    return net.excite("x", "y", drives).inhibit("x", "y", inhibitions)


def sweep(phi, fields, stage, rows=None, half=counter_local_half_sweep) -> torch.Tensor:
    rows = torch.arange(phi.shape[0]) if rows is None else rows
    width = 1.5 * math.sqrt(fields.spacing / 2)
    return counter_local_sweep(
        phi, fields, width=width, seed=7, stage=stage, rows=rows, half_sweep=half
    )


def test_the_counter_sweep_samples_the_exact_activity():
    drives, inhibitions = torch.tensor([0.0, 120.0, 120.0]), torch.tensor([0.0, 0.0, 30.0])
    # Local moves alone from the vacuum: 200 + 400 sweeps were too few at drive 120 (the
    # torch-generator sweep, same setup, gave z = −4.6 and −3.1 for two of four seeds).
    chains, thermalization, sweeps = 32, 600, 1000
    fields = fields_of(relays(drives, inhibitions), chains, torch.float64)
    phi = torch.ones(3 * chains, 1, SMALL["n_time"], dtype=torch.float64)
    _, norm = input_spike(**SMALL)
    total = torch.zeros(3 * chains, dtype=torch.float64)
    for stage in range(thermalization + sweeps):
        sweep(phi, fields, stage)
        if stage >= thermalization:
            total += potential_sum(phi[:, 0], SMALL["lam"]) / norm
    chain_means = (total / sweeps).view(3, chains)
    activity = chain_means.mean(1)
    stderr = chain_means.std(1) / chains**0.5
    assert_within(activity, stderr, exact_activity(SMALL, drives, inhibitions))


def test_the_numbers_of_a_row_follow_its_identity_not_its_place():
    """Chunks, permutations and sub-batches give each row the same paths."""
    fields = fields_of(relays(torch.linspace(0.0, 120.0, 10), torch.zeros(10)), 1, torch.float64)
    start = torch.rand(10, 1, SMALL["n_time"], generator=torch.Generator().manual_seed(0))
    start = start.double() * 2 - 1
    whole = start.clone()
    for stage in range(5):
        sweep(whole, fields, stage)
    order = torch.tensor([3, 9, 0, 4, 1, 8, 2, 7, 5, 6])
    shuffled = start[order].clone()
    shuffled_fields = dataclasses.replace(fields, drive=fields.drive[order])
    for stage in range(5):
        sweep(shuffled[:4], shuffled_fields.rows(0, 4), stage, rows=order[:4])
        sweep(shuffled[4:], shuffled_fields.rows(4, 10), stage, rows=order[4:])
    assert torch.equal(shuffled, whole[order])


def test_neurons_without_links_share_their_numbers():
    net = Network().add_input("x")
    for name in "abc":
        net.add_neuron(name).excite("x", name, 60.0)
    fields = fields_of(net, 4, torch.float32)
    assert fields.shared_noise
    phi = torch.ones(4, 3, SMALL["n_time"])
    for stage in range(10):
        sweep(phi, fields, stage)
    assert torch.equal(phi[:, 0], phi[:, 1]) and torch.equal(phi[:, 0], phi[:, 2])
    assert not torch.equal(phi[0], phi[1])  # chains differ


@pytest.mark.slow
@pytest.mark.parametrize("linked", [False, True])
def test_compiled_and_eager_sweeps_give_the_same_paths(linked: bool):
    """The compiled sweep is the same source: equal paths to rounding (float64), and equal
    acceptance counts."""
    if not compiled.compile_requested():
        pytest.skip("QNN_TORCH_COMPILE=0: nothing compiled to compare")
    if linked:
        net = Network().add_input("x").add_neuron("a").add_neuron("b")
        net.excite("x", "a", 60.0).excite("a", "b", 30.0).inhibit("a", "b", 5.0)
    else:
        net = relays(torch.tensor([0.0, 60.0, 120.0]), torch.tensor([0.0, 0.0, 20.0]))
    fields = fields_of(net, 4, torch.float64)
    rows = fields.drive.shape[0]
    start = torch.rand(rows, fields.drive.shape[1], SMALL["n_time"], dtype=torch.float64)
    eager, fused = start.clone(), start.clone()
    for stage in range(3):
        accepted = sweep(eager, fields, stage)
        accepted_fused = sweep(fused, fields, stage, half=compiled.local_half_sweep)
        assert int(accepted) == int(accepted_fused)
    assert not compiled.local_half_sweep.failed, "torch.compile was not available"
    torch.testing.assert_close(fused, eager, rtol=1e-12, atol=1e-12)
