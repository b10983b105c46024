"""The counter-based local sweep: exact against the transfer matrix, the same numbers
whatever the layout of the rows, and the same paths compiled and eager."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from qnn_torch import Network, SamplerConfig, engine
from qnn_torch.engine import Moves, SamplerOutput
from qnn_torch.functional import compiled
from qnn_torch.functional.physics import input_spike, potential_sum
from qnn_torch.functional.sampler import (
    LatticeFields,
    counter_local_half_sweep,
    counter_local_sweep,
)
from qnn_torch.functional.threefry import sweep_key
from qnn_torch.simulate import run_sampler
from tests.helpers import RELAYS, SMALL, assert_within, exact_activity, linked_pair, relays


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


def sweep(phi, fields, stage, rows=None, half=counter_local_half_sweep) -> torch.Tensor:
    rows = torch.arange(phi.shape[0]) if rows is None else rows
    width = 1.5 * math.sqrt(fields.spacing / 2)
    return counter_local_sweep(
        phi, fields, width=width, key=sweep_key(7, stage), rows=rows, half_sweep=half
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
def test_compiled_and_eager_sweeps_give_the_same_paths(linked: bool, compiling):
    """The compiled sweep is the same source: equal paths to rounding (float64), and equal
    acceptance counts; other row counts run the graphs already compiled."""
    fields = fields_of(linked_pair() if linked else RELAYS, 4, torch.float64)
    rows = fields.drive.shape[0]
    start = torch.rand(rows, fields.drive.shape[1], SMALL["n_time"], dtype=torch.float64)
    eager, fused = start.clone(), start.clone()
    for stage in range(3):
        accepted = sweep(eager, fields, stage)
        accepted_fused = sweep(fused, fields, stage, half=compiled.local_half_sweep)
        assert int(accepted) == int(accepted_fused)
    assert not compiled.local_half_sweep.failed, "torch.compile was not available"
    torch.testing.assert_close(fused, eager, rtol=1e-12, atol=1e-12)
    # Other row counts reuse them, even one equal to another tensor's size (no duck
    # sizing); dynamo specialises a size of 1, so a chunk of one row compiles its own graph.
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for part in (slice(0, 2), slice(1, rows)):  # 2 rows: as many as a linked pair's neurons
        sweep(fused[part], fields.rows(part.start, part.stop), 3, half=compiled.local_half_sweep)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def local_run(network: Network, **settings) -> SamplerOutput:
    defaults = {"chains": 4, "thermalization": 10, "sweeps": 20, "algorithm": "local"}
    config = SamplerConfig(**{**SMALL, **defaults, **settings})
    return run_sampler(network.compile(config), config)


@pytest.mark.parametrize("algorithm", ["local", "auto", "multilevel+shift+cluster"])
@pytest.mark.parametrize("linked", [False, True])
def test_the_sampler_s_numbers_follow_rows_not_chunks_or_stopped_neighbours(
    algorithm, linked, monkeypatch
):
    """Every move draws counter-based numbers: the same paths whatever the chunks, whether
    a sweep's words come from a bank of many sweeps' or are drawn as the sweep goes, and a
    network's chains go on with the same numbers when other networks of the batch stop
    early."""
    network = linked_pair() if linked else RELAYS
    whole = local_run(network, algorithm=algorithm)
    for chunk_rows in (1, 5):
        chunked = local_run(network, chunk_rows=chunk_rows, algorithm=algorithm)
        assert torch.equal(chunked.paths, whole.paths)
        assert torch.equal(chunked.chain_activity, whole.chain_activity)
    with monkeypatch.context() as patch:
        patch.setattr(engine, "_BANK_BYTES", 0)  # no bank: every sweep draws its own
        moves = Moves(SamplerConfig(), torch.device("cpu"), None, rows=1, neurons=1, sweeps=99)
        assert moves.bank_sweeps == 0
        unbanked = local_run(network, algorithm=algorithm)
    assert torch.equal(unbanked.paths, whole.paths)
    if linked:
        return  # one network: none stops before another
    # Networks 0 and 1 stop after the first block of 10; network 2 measures all 20.
    stop_early = SamplerConfig(
        **SMALL, chains=4, thermalization=10, sweeps=10, max_sweeps=20, algorithm=algorithm
    )
    network = RELAYS.compile(stop_early)
    first_two = torch.tensor([True, True, False])
    out = run_sampler(network, stop_early, stop_when=lambda *_: first_two)
    assert out.sweeps.tolist() == [10, 10, 20]
    assert torch.equal(out.paths[2], whole.paths[2])
    assert torch.equal(out.chain_activity[2], whole.chain_activity[2])


@pytest.mark.slow
@pytest.mark.parametrize("linked", [False, True])
def test_the_sampler_s_local_move_is_the_same_compiled_and_eager(
    linked: bool, monkeypatch, compiling
):
    network = linked_pair() if linked else RELAYS
    monkeypatch.setenv(compiled.COMPILE_ENV, "0")
    eager = local_run(network, dtype=torch.float64)
    monkeypatch.setenv(compiled.COMPILE_ENV, "1")
    fused = local_run(network, dtype=torch.float64)
    assert not compiled.local_half_sweep.failed, "torch.compile was not available"
    torch.testing.assert_close(fused.paths, eager.paths, rtol=1e-12, atol=1e-12)
    assert fused.acceptance == eager.acceptance


@pytest.mark.slow
def test_the_sampler_s_compiled_local_move_samples_the_exact_activity(compiling):
    drives, inhibitions = torch.tensor([0.0, 60.0, 120.0]), torch.tensor([0.0, 0.0, 20.0])
    out = local_run(
        RELAYS, dtype=torch.float64, chains=32, thermalization=600, sweeps=1000, init="vacuum"
    )
    assert_within(out.activity[:, 0], out.stderr[:, 0], exact_activity(SMALL, drives, inhibitions))


@pytest.mark.parametrize("linked", [False, True])
def test_banks_of_words_give_the_words_drawn_sweep_by_sweep(linked, monkeypatch):
    """Banks of 9 sweeps' words (not dividing the key blocks of 64), across a key block's
    end, with the cluster move every 3rd sweep and chunks of 5 rows, and networks that stop
    early (new chunks, new banks): the paths of runs that draw every sweep's words."""
    network = linked_pair() if linked else RELAYS
    settings = {
        "algorithm": "local+multilevel+shift+cluster",
        "cluster_every": 3,
        "chunk_rows": 5,
        "thermalization": 60,  # and 15 or 45 measured: past the key block's 64 sweeps
        "sweeps": 15,
        "max_sweeps": 45,
    }
    config = SamplerConfig(**{**SMALL, "chains": 4, **settings})
    compiled_network = network.compile(config)
    networks, neurons = compiled_network.drive.shape
    shape = {"rows": networks * config.chains, "neurons": 1 if not linked else neurons}
    shape["sweeps"] = config.thermalization + config.max_sweeps
    stop = torch.zeros(networks, dtype=torch.bool)
    stop[0] = True  # the first network stops after its first block (one alone: linked)

    def run() -> SamplerOutput:
        return run_sampler(compiled_network, config, stop_when=lambda *_: stop)

    sweep_bytes = Moves(config, torch.device("cpu"), None, **shape).sweep_bytes
    with monkeypatch.context() as patch:
        patch.setattr(engine, "_BANK_BYTES", 9 * sweep_bytes)
        assert Moves(config, torch.device("cpu"), None, **shape).bank_sweeps == 9
        banked = run()
    with monkeypatch.context() as patch:
        patch.setattr(engine, "_BANK_BYTES", 0)
        drawn = run()
    assert banked.sweeps.tolist() == drawn.sweeps.tolist()
    assert torch.equal(banked.paths, drawn.paths)
    assert banked.acceptance == drawn.acceptance
