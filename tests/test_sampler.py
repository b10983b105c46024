"""The Monte Carlo sampler against exact transfer-matrix results, and its contract."""

import dataclasses
import sys

import pytest
import torch

from qnn_torch import Network, SamplerConfig, simulate
from qnn_torch.functional.exact import two_neuron_reference
from qnn_torch.functional.physics import kink_path, potential_sum
from qnn_torch.functional.sampler import LatticeFields, counter_draw, sign_cluster_move
from qnn_torch.functional.threefry import sweep_key
from tests.helpers import PAPER, SMALL, assert_within, exact_activity

# "auto" is "multilevel+cluster" on SMALL (a·√(2Λ) = 0.68 < 1): not run twice.
ALGORITHMS = ["local", "multilevel", "multilevel+cluster", "local+multilevel+cluster"]


def relay(strength, inhibition=None) -> Network:
    net = Network().add_input("x").add_neuron("y").excite("x", "y", strength)
    return net if inhibition is None else net.inhibit("x", "y", inhibition)


@pytest.mark.parametrize("init", ["vacuum", "saw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_matches_exact_on_small_lattice(algorithm, dtype, init):
    drives = torch.tensor([0.0, 120.0])  # without and with a drive, in one batch
    config = SamplerConfig(
        **SMALL,
        chains=32,
        thermalization=500,
        sweeps=2000,
        algorithm=algorithm,
        init=init,
        dtype=dtype,
        seed=1,
    )
    result = simulate(relay(drives), config)
    assert_within(result.activity["y"], result.stderr["y"], exact_activity(SMALL, drives))


@pytest.mark.parametrize("init", ["vacuum", "saw"])
def test_defaults_equilibrate_at_the_paper_lattice(init):
    # MNIST-sized drives included: k·Σε̂b reaches ~2·10⁴ there.
    drives = torch.tensor([0.0, 3000.0, 6000.0, 20000.0])
    result = simulate(relay(drives), SamplerConfig(init=init))
    assert_within(result.activity["y"], result.stderr["y"], exact_activity(PAPER, drives))
    baseline = float(result.activity["y"][0])
    assert 0.10 < baseline < 0.16  # zero-point fluctuations alone


@pytest.mark.parametrize("init", ["vacuum", "saw"])
def test_defaults_equilibrate_on_a_coarse_paper_lattice(init):
    # 32 slices at Λ = 5000: the potential dominates, bridge moves alone mix slowly here.
    lattice = {**PAPER, "n_time": 32, "n_kinks": 2}
    drives = torch.tensor([0.0, 6000.0])
    result = simulate(relay(drives), SamplerConfig(**lattice, chains=16, init=init))
    assert_within(result.activity["y"], result.stderr["y"], exact_activity(lattice, drives))


def test_input_inhibition_matches_exact():
    drives, inhibitions = torch.tensor([120.0, 120.0]), torch.tensor([0.0, 30.0])
    config = SamplerConfig(**SMALL, chains=32, thermalization=300, sweeps=1500)
    result = simulate(relay(drives, inhibitions), config)
    expected = exact_activity(SMALL, drives, inhibitions)
    assert_within(result.activity["y"], result.stderr["y"], expected)
    assert expected[1] < expected[0]  # the inhibition is visible in the check


@pytest.mark.parametrize(
    "algorithm",
    ["local", "multilevel+cluster", "local+multilevel+cluster", "multilevel+shift+cluster"],
)
def test_coupled_neurons_match_two_neuron_transfer_matrix(algorithm):
    # "multilevel+cluster" is the default ("auto") on this fine lattice, a·√(2Λ) = 0.79.
    lattice = {"n_time": 16, "time_extent": 2.0, "lam": 20.0, "n_kinks": 2}
    excite_01, inhibit = 30.0, 10.0
    expected = torch.tensor(
        two_neuron_reference(
            n_time=16,
            time_extent=2.0,
            lam=20.0,
            excite_01=excite_01,
            inhibit=inhibit,
            grid_points=48,
        )
    )
    net = Network().add_neuron("a").add_neuron("b").excite("a", "b", excite_01)
    net.inhibit("a", "b", inhibit)
    config = SamplerConfig(
        **lattice, chains=32, thermalization=500, sweeps=3000, algorithm=algorithm
    )
    result = simulate(net, config)
    norm = potential_sum(kink_path(**lattice, dtype=torch.float64), 20.0)
    estimates = torch.tensor([result.activity["a"], result.activity["b"]]) * norm
    errors = torch.tensor([result.stderr["a"], result.stderr["b"]]) * norm
    assert_within(estimates, errors, expected)


def unlinked(drives: torch.Tensor) -> Network:
    """One network of unlinked neurons a, b, … driven by one input with ``drives``."""
    net = Network().add_input("x")
    for name, drive in zip("abcd", drives, strict=False):
        net.add_neuron(name).excite("x", name, drive)
    return net


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_independent_neurons_share_random_numbers_and_stay_exact(algorithm):
    # Unlinked neurons of one network draw common random numbers: each neuron's chain is
    # still exact, and neurons with identical drives have identical chains.
    drives = torch.tensor([120.0, 121.0, 0.0, 121.0])
    config = SamplerConfig(
        **SMALL, chains=16, thermalization=300, sweeps=600, algorithm=algorithm, seed=2
    )
    result = simulate(unlinked(drives), config)
    activity = torch.stack([result.activity[n] for n in "abcd"])
    stderr = torch.stack([result.stderr[n] for n in "abcd"])
    assert_within(activity, stderr, exact_activity(SMALL, drives))
    assert result.names == tuple("abcd")
    assert torch.equal(result.chain_activity[:, 1], result.chain_activity[:, 3])


def test_common_random_numbers_measure_close_outputs_differences_better():
    # The paper's lattice at a weak MNIST drive, two outputs 1% apart: under common random
    # numbers their chains move together, and the error of the difference, measured chain
    # by chain, is well below that of two independent estimates (measured ratio 0.34–0.45
    # for seeds 4–7, median 0.41 on the 400 closest MNIST test images; 1.0 without).
    drives = torch.tensor([1000.0, 1010.0])
    config = SamplerConfig(chains=16, thermalization=100, sweeps=200, init="spikes", seed=4)
    result = simulate(unlinked(drives), config)
    assert_within(
        torch.stack([result.activity["a"], result.activity["b"]]),
        torch.stack([result.stderr["a"], result.stderr["b"]]),
        exact_activity(PAPER, drives),
    )
    a, b = result.chain_activity.unbind(-1)
    margin_error = (b - a).std() / config.chains**0.5
    independent_error = (result.stderr["a"] ** 2 + result.stderr["b"] ** 2).sqrt()
    assert margin_error < 0.7 * independent_error


def test_linked_neurons_refuse_shared_random_numbers():
    fields = dict(lam=1.0, spacing=0.1, profile=torch.ones(4), drive=torch.ones(1, 2))
    links = torch.ones(1, 2, 2)
    with pytest.raises(ValueError, match="shared_noise needs independent neurons"):
        LatticeFields(
            **fields,
            input_inhibition=None,
            excite=links,
            inhibit=None,
            color_bounds=((0, 1), (1, 2)),
            shared_noise=True,
        )


def test_sign_cluster_move_samples_the_embedded_ising_chain_exactly():
    # Given |φ|, the signs are a periodic Ising chain with J_t = |φ_t φ_{t+1}|/a.
    spacing = 0.5
    magnitude = torch.tensor([0.9, 0.1, 0.8, 0.5, 0.2, 0.7], dtype=torch.float64)
    n = magnitude.numel()
    rows = 20000
    phi = magnitude.repeat(rows, 1, 1)  # (rows, 1, n)
    identities = torch.arange(rows)
    for sweep in range(30):  # from all signs +: burn in, then one sample per independent row
        sign_cluster_move(phi, spacing=spacing, draw=counter_draw(identities, sweep_key(3, sweep)))
    phi = phi[:, 0]
    bits = 2 ** torch.arange(n)
    counts = torch.bincount(((phi > 0).long() * bits).sum(-1), minlength=2**n).double()
    configs = torch.tensor([[1.0 if c >> t & 1 else -1.0 for t in range(n)] for c in range(2**n)])
    coupling = magnitude * magnitude.roll(-1) / spacing
    weight = torch.exp((configs * configs.roll(-1, 1) * coupling).sum(-1).double())
    expected = counts.sum() * weight / weight.sum()
    # Pearson χ² over 64 cells, 63 degrees of freedom: P(χ² > 110) ≈ 2·10⁻⁴.
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 110, chi2


def test_same_seed_same_numbers_and_other_seed_differs():
    config = SamplerConfig(**SMALL, chains=4, thermalization=20, sweeps=50, seed=7)
    first = simulate(relay(100.0), config)
    again = simulate(relay(100.0), config)
    other = simulate(relay(100.0), dataclasses.replace(config, seed=8))
    assert torch.equal(first.paths, again.paths)
    assert first.activity == again.activity and first.stderr == again.stderr
    assert not torch.equal(first.paths, other.paths)


def test_chunked_rows_give_identical_statistics_to_the_exact_answer():
    drives = torch.tensor([0.0, 120.0])
    config = SamplerConfig(**SMALL, chains=16, thermalization=300, sweeps=1000, chunk_rows=5)
    result = simulate(relay(drives), config)
    assert_within(result.activity["y"], result.stderr["y"], exact_activity(SMALL, drives))


def test_result_shapes_and_observables():
    drives = torch.tensor([[0.0, 50.0, 100.0]])
    config = SamplerConfig(**SMALL, chains=3, thermalization=10, sweeps=40)
    result = simulate(relay(drives), config, record_profile=True)
    assert result.activity["y"].shape == (1, 3)
    assert result.paths.shape == (1, 3, 3, 1, 32)
    assert result.chain_activity.shape == (1, 3, 3, 1)
    assert result.potential_profile.shape == (1, 3, 1, 32)
    assert set(result.acceptance) == set(config.moves) == {"multilevel", "cluster"}
    assert all(0 < rate <= 1 for rate in result.acceptance.values())
    assert torch.all(result.autocorrelation_time["y"] >= 0.5)
    # The profile's sum is the chains' mean activity times the normalisation.
    norm = potential_sum(kink_path(**SMALL), SMALL["lam"])
    assert torch.allclose(
        result.potential_profile.sum(-1)[..., 0].double() / norm.double(),
        result.activity["y"],
        rtol=1e-4,
    )
    scalar = simulate(relay(50.0), config)
    for table in (scalar.activity, scalar.stderr, scalar.autocorrelation_time):
        assert isinstance(table["y"], torch.Tensor) and table["y"].dim() == 0  # float() works


# Thermalisation, measurement, and a sweep seen only at a later periodic look (sweep 31).
@pytest.mark.parametrize("sweep", [3, 7, 21])
def test_non_finite_paths_raise_naming_the_sweep(monkeypatch, sweep):
    module = sys.modules["qnn_torch.engine"]
    calls = {"n": 0}

    def poisoned(phi, **kwargs):
        calls["n"] += 1
        if calls["n"] == sweep + 1:
            phi[0, 0, 0] = float("nan")

    monkeypatch.setattr(module, "sign_cluster_move", poisoned)
    with pytest.raises(FloatingPointError, match=f"sweep {sweep}"):
        simulate(
            relay(10.0),
            SamplerConfig(**SMALL, chains=2, thermalization=5, sweeps=40, cluster_every=1),
        )


def test_strength_overflowing_the_dtype_is_refused():
    with pytest.raises(ValueError, match="strength"):
        simulate(relay(1e39), SamplerConfig(**SMALL, dtype=torch.float32))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_exact_and_is_deterministic(dtype):
    drives = torch.tensor([0.0, 3000.0, 20000.0])
    config = SamplerConfig(device="cuda", dtype=dtype, chains=16)
    result = simulate(relay(drives), config)
    assert result.paths.device.type == "cuda"
    assert_within(result.activity["y"], result.stderr["y"], exact_activity(PAPER, drives))
    again = simulate(relay(drives), config)
    assert torch.equal(result.paths, again.paths)
