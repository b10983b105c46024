"""No silent wrong answers: bad inputs are refused early, untrustworthy results look so."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch

from qnn_torch import (
    ColdStartWarning,
    FewChainsWarning,
    Network,
    QuantumNeuronLayer,
    SamplerConfig,
    StuckChainWarning,
    grad_with_stderr,
    simulate,
)
from qnn_torch.autograd import Jacobian, attach_jacobian
from qnn_torch.engine import _infinite_rows, _stuck_networks
from qnn_torch.functional.exact import single_neuron_activity
from qnn_torch.functional.layer import readout
from qnn_torch.functional.observables import (
    binned_autocorrelation_time,
    chain_mean_and_error,
    integrated_autocorrelation_time,
)
from qnn_torch.functional.physics import double_well, kink_path
from qnn_torch.simulate import run_sampler
from tests.helpers import SMALL

QUICK = {**SMALL, "chains": 4, "thermalization": 20, "sweeps": 40, "seed": 5}


def relay(strength: float | torch.Tensor) -> Network:
    return Network().add_input("x").add_neuron("y").excite("x", "y", strength)


# -- 1. stuck chains --------------------------------------------------------------------
def test_bisection_segments_far_longer_than_the_well_are_refused():
    # Nt = 64 at Λ = 5000: one slice is 1.09 correlation lengths 1/√(2Λ).
    with pytest.raises(ValueError, match=r"bisection_levels=5 gives segments of 33\.9"):
        SamplerConfig(algorithm="multilevel", bisection_levels=5, n_time=64)
    with pytest.raises(ValueError, match="bisection_levels=3"):  # 7.7 correlation lengths
        SamplerConfig(algorithm="multilevel", bisection_levels=3, n_time=64)
    assert SamplerConfig(algorithm="multilevel", bisection_levels=2, n_time=64).levels == 2
    # Without multilevel moves the levels are unused, and one level (one slice) is allowed.
    SamplerConfig(algorithm="local", bisection_levels=5, n_time=64)
    SamplerConfig(algorithm="multilevel", bisection_levels=1, n_time=8, lam=1e6)


@pytest.mark.parametrize("n_time", [16, 32, 64, 128, 512, 2048])
@pytest.mark.parametrize("lam", [1.0, 60.0, 5000.0, 1e6])
@pytest.mark.parametrize("time_extent", [0.1, 0.7, 2.0, 20.0])
def test_automatic_levels_are_never_refused(n_time, lam, time_extent):
    auto = SamplerConfig(n_time=n_time, lam=lam, time_extent=time_extent)
    explicit = SamplerConfig(
        n_time=n_time, lam=lam, time_extent=time_extent, bisection_levels=auto.levels
    )
    assert explicit.levels == auto.levels


@pytest.mark.parametrize("step_size", [1e3, 1e6])
def test_off_scale_step_size_warns_and_reports_infinite_errors(step_size):
    config = SamplerConfig(**{**QUICK, "thermalization": 0}, algorithm="local", step_size=step_size)
    with pytest.warns(StuckChainWarning, match="never changed") as record:
        result = simulate(relay(torch.tensor([0.0, 120.0])), config)
    assert torch.isinf(result.stderr["y"]).all() and (result.stderr["y"] > 0).all()
    assert torch.isinf(result.autocorrelation_time["y"]).all()
    assert torch.isfinite(result.activity["y"]).all()
    if step_size == 1e6:  # no proposal at all is accepted: the move is named
        assert result.acceptance["local"] == 0.0
        assert any("local move accepted none" in str(w.message) for w in record)


def test_stuck_sampler_output_and_jacobians_are_not_trusted():
    config = SamplerConfig(**{**QUICK, "thermalization": 0}, algorithm="local", step_size=1e6)
    compiled = relay(120.0).compile(config)
    with pytest.warns(StuckChainWarning):
        out = run_sampler(compiled, config, gradients=("drive",))
    assert torch.isinf(out.stderr).all() and torch.isinf(out.autocorrelation_time).all()
    assert torch.isinf(out.jacobians["drive"].stderr).all()


def test_gradient_of_a_stuck_network_has_an_infinite_error():
    config = SamplerConfig(**{**QUICK, "thermalization": 0}, algorithm="local", step_size=1e6)
    strength = torch.tensor([0.0, 120.0], dtype=torch.float64, requires_grad=True)
    with pytest.warns(StuckChainWarning):
        activity = simulate(relay(strength), config).activity["y"]
    (grad,), (stderr,) = grad_with_stderr(activity.sum(), strength)
    assert grad.tolist() == [0.0, 0.0]  # frozen chains: every covariance replicate is 0
    assert torch.isinf(stderr).all() and (stderr > 0).all()


def sampled(
    stderr: list[float], replicates: list[list[float]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activities (1, 2) of two independent neurons with a hand-made drive Jacobian."""
    loo = torch.tensor(replicates, dtype=torch.float64)[:, None]  # (C, 1, 2)
    jacobian = Jacobian(loo.mean(0), torch.tensor([stderr], dtype=torch.float64), loo, True)
    drive = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    activity = torch.tensor([[0.3, 0.6]], dtype=torch.float64)
    out = attach_jacobian(activity, {"drive": jacobian}, {"drive": drive}, names="ab", what="t")
    return out, drive


def test_gradient_error_is_infinite_where_an_untrusted_or_agreeing_jacobian_contributes():
    spread = [[0.1, 0.2], [0.3, 0.2], [0.2, 0.2]]  # neuron a varies, neuron b agrees exactly
    activity, drive = sampled([0.05, 0.0], spread)
    (grad,), (stderr,) = grad_with_stderr(activity.sum(), drive)
    torch.testing.assert_close(grad, torch.tensor([[0.2, 0.2]], dtype=torch.float64))
    assert 0 < stderr[0, 0] < math.inf and stderr[0, 1] == math.inf
    activity, drive = sampled([math.inf, 0.05], [[0.1, 0.2], [0.3, 0.1], [0.2, 0.3]])
    (_,), (stderr,) = grad_with_stderr(activity.sum(), drive)
    assert stderr[0, 0] == math.inf and 0 < stderr[0, 1] < math.inf


def test_gradient_no_jacobian_entry_reaches_keeps_its_zero_error():
    activity, drive = sampled([0.05, math.inf], [[0.1, 0.2], [0.3, 0.2], [0.2, 0.2]])
    (grad,), (stderr,) = grad_with_stderr(activity[:, 0].sum(), drive)
    assert grad[0, 1] == 0 and stderr[0, 1] == 0  # neuron b is not in the output: exact
    assert 0 < stderr[0, 0] < math.inf


def test_healthy_run_is_not_flagged():
    with warnings.catch_warnings():
        warnings.simplefilter("error", StuckChainWarning)
        result = simulate(relay(torch.tensor([0.0, 120.0])), SamplerConfig(**QUICK))
    stderr = result.stderr["y"]
    assert torch.isfinite(stderr).all() and (stderr > 0).all()


def test_stuck_networks_are_flagged_one_by_one():
    # Four networks, two chains, one neuron: network 0 is fine, network 1 has a frozen
    # chain, network 2 has chains that agree to the last bit (0.1 does not round exactly),
    # network 3 a chain that kept its value through its one measured sweep (no verdict).
    moved = torch.tensor([[[True], [True]], [[True], [False]], [[True], [True]], [[False], [True]]])
    chain_means = torch.tensor([[[0.3], [0.5]], [[0.2], [0.6]], [[0.1], [0.1]], [[0.2], [0.4]]])
    _, stderr = chain_mean_and_error(chain_means.double(), dim=1)
    counts = {"local": [torch.tensor(5), 10]}
    sweeps = torch.tensor([10, 10, 10, 1])
    with pytest.warns(StuckChainWarning, match=r"2 of 4 networks .*\(1\).*agree \(1\)"):
        stuck = _stuck_networks(moved, sweeps, stderr, torch.zeros(4, dtype=torch.bool), counts, "")
    assert stuck.tolist() == [False, True, True, False]
    honest = _infinite_rows(stderr, stuck)
    assert honest[:, 0].isinf().tolist() == [False, True, True, False]
    assert math.isfinite(stderr[1, 0])  # the input is not modified


def test_zero_acceptance_of_one_move_is_named():
    moved = torch.ones(1, 2, 1, dtype=torch.bool)
    stderr = torch.tensor([[0.1]], dtype=torch.float64)
    counts = {"local": [torch.tensor(5), 10], "multilevel": [torch.tensor(0), 8]}
    with pytest.warns(StuckChainWarning, match="multilevel move accepted none of its 8"):
        stuck = _stuck_networks(
            moved, torch.tensor([10]), stderr, torch.zeros(1, dtype=torch.bool), counts, ""
        )
    assert not stuck.any()  # the local move still samples: the errors stand


# -- 2. the network keeps copies ----------------------------------------------------------
def test_network_is_unaffected_by_later_in_place_changes():
    # float64 on the CPU: the very dtype and device the network stores (no implicit copy).
    strength = torch.tensor([6000.0, 100.0], dtype=torch.float64)
    brightness = torch.tensor(0.5, dtype=torch.float64)
    net = Network().add_input("x", brightness).add_neuron("y").excite("x", "y", strength)
    strength.mul_(-1.0)
    brightness.fill_(0.0)
    compiled = net.compile(SamplerConfig(n_time=16))
    assert compiled.drive[:, 0].tolist() == [3000.0, 50.0]


def test_network_copy_keeps_the_gradient():
    strength = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    net = Network().add_input("x", 0.5).add_neuron("y").excite("x", "y", strength)
    with torch.no_grad():
        strength.add_(1.0)  # an optimiser step after building: the network keeps 3.0
    drive = net.compile(SamplerConfig(n_time=16, dtype=torch.float64)).drive
    assert float(drive.detach()) == 1.5
    (grad,) = torch.autograd.grad(drive.sum(), strength)
    assert float(grad) == 0.5


# -- 3. early, clear failures ---------------------------------------------------------------
@pytest.mark.parametrize("config", [{}, {"n_time": 32}, "fast", 0])
def test_simulate_refuses_a_config_that_is_not_a_sampler_config(config):
    with pytest.raises(ValueError, match=r"config must be a qnn_torch\.SamplerConfig"):
        simulate(relay(1.0), config)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [2**63, 2**64])
def test_seed_out_of_range_is_refused_at_construction(seed):
    with pytest.raises(ValueError, match=f"seed must be < 2\\*\\*63, got {seed}"):
        SamplerConfig(seed=seed)


def test_largest_seed_runs():
    config = SamplerConfig(**{**QUICK, "seed": 2**63 - 1, "sweeps": 5, "thermalization": 5})
    assert torch.isfinite(simulate(relay(1.0), config).activity["y"])


def test_zero_kinks_are_refused_at_construction():
    with pytest.raises(ValueError, match=r"n_kinks must be >= 2.*got 0"):
        SamplerConfig(n_kinks=0)


def test_kinks_between_slices_are_refused_before_sampling():
    # Two slices cannot hold two kinks; 4 kinks on 12 slices fall between the slices, where
    # ψ_t² ≈ 1: Σ_t V0(ψ_t), the activity's normalisation, is 0.17 of its resolved value.
    with pytest.raises(ValueError, match="n_kinks must be at most n_time/2 = 1"):
        SamplerConfig(n_time=2, time_extent=2.0, lam=1e7, n_kinks=2, algorithm="local")
    with pytest.raises(ValueError, match=r"n_kinks=4 kinks on n_time=12 slices: the slices miss"):
        SamplerConfig(n_time=12, n_kinks=4)
    with pytest.raises(ValueError, match="n_kinks must be at most n_time/2 = 256"):
        SamplerConfig(n_kinks=2**40)  # refused before the kink path is allocated
    # Nt = 4 at the paper's Λ with 4 kinks read activities of ~10³; kinks on slices are fine.
    with pytest.raises(ValueError, match="n_kinks must be at most"):
        SamplerConfig(n_time=4)
    SamplerConfig(n_time=4, time_extent=2.0, lam=1e7, n_kinks=2)


# -- 4. autocorrelation times from too short a series -----------------------------------------
def test_one_bin_gives_an_infinite_autocorrelation_time():
    bins = torch.rand(3, 4, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    variance = torch.ones(3, dtype=torch.float64)
    for bin_length in (1, 50):
        tau = binned_autocorrelation_time(bins, bin_length, variance)
        assert tau.shape == (3,) and torch.isinf(tau).all() and (tau > 0).all()
    assert torch.isinf(integrated_autocorrelation_time(bins)).all()
    two = torch.rand(3, 4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.isfinite(binned_autocorrelation_time(two, 50, variance)).all()


def test_a_single_sweep_reports_an_unknown_autocorrelation_time():
    config = SamplerConfig(**{**QUICK, "sweeps": 1})
    result = simulate(relay(120.0), config)
    assert torch.isinf(result.autocorrelation_time["y"])
    assert math.isfinite(float(result.stderr["y"])) and float(result.stderr["y"]) > 0


# -- 5. Born read-out -------------------------------------------------------------------------
def test_born_readout_of_a_zero_row_raises():
    activity = torch.tensor([[0.2, 0.4], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"readout 'born'.*row \(1,\)"):
        readout(activity, "born")
    scores = readout(activity[:1], "born")
    torch.testing.assert_close(scores, torch.tensor([[0.2, 0.8]]))


# -- 6. the recorded potential profile is V0 of the paths -------------------------------------
def test_potential_profile_is_the_double_well_of_the_paths():
    config = SamplerConfig(**{**QUICK, "sweeps": 1}, dtype=torch.float64)
    result = simulate(relay(120.0), config, record_profile=True)
    expected = double_well(result.paths, config.lam).mean(0)  # one sweep: the last paths
    torch.testing.assert_close(result.potential_profile, expected, rtol=1e-12, atol=0)


# -- 7. honest errors from few chains and cold starts --------------------------------------------
def test_errors_from_fewer_than_four_chains_warn() -> None:
    with pytest.warns(FewChainsWarning, match="chains=2"):
        simulate(relay(120.0), SamplerConfig(**{**QUICK, "chains": 2}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewChainsWarning)
        simulate(relay(120.0), SamplerConfig(**QUICK))  # 4 chains


def test_a_cold_start_without_thermalisation_warns_and_an_equilibrium_start_does_not() -> None:
    for init in ("vacuum", "saw", "spikes"):
        with pytest.warns(ColdStartWarning, match=f"init='{init}' with thermalization=0"):
            simulate(relay(120.0), SamplerConfig(**{**QUICK, "thermalization": 0, "init": init}))
    equilibrium = SamplerConfig(**{**QUICK, "thermalization": 0, "init": "equilibrium"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ColdStartWarning)
        simulate(relay(120.0), equilibrium)
        compiled = relay(120.0).compile(SamplerConfig(**{**QUICK, "thermalization": 0}))
        paths = torch.ones(1, 4, 1, SMALL["n_time"])
        run_sampler(compiled, SamplerConfig(**{**QUICK, "thermalization": 0}), initial_paths=paths)


# -- 8. types and domains, up front -------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (torch.tensor([0.5 + 0.1j]), "complex64"),
        (torch.tensor([True]), "bool"),
        (torch.empty(1, device="meta"), "meta"),
    ],
)
def test_complex_bool_and_meta_tensors_are_refused_where_real_numbers_are_meant(value, kind):
    with pytest.raises(TypeError, match=f"brightness must hold real numbers, got a {kind}"):
        Network().add_input("x", value)
    with pytest.raises(TypeError, match=f"strength must hold real numbers, got a {kind}"):
        Network().add_input("x").add_neuron("y").excite("x", "y", value)
    layer = QuantumNeuronLayer(1, 2, config=SamplerConfig(**QUICK))
    with pytest.raises(TypeError, match=f"input must hold real numbers, got a {kind}"):
        layer(value[:, None])
    path = kink_path(**SMALL, dtype=torch.float64)
    with pytest.raises(TypeError, match=f"drive must hold real numbers, got a {kind}"):
        single_neuron_activity(value, None, path, time_extent=2.0, lam=60.0)


def test_sequences_and_arrays_of_real_numbers_are_accepted() -> None:
    path = kink_path(**SMALL, dtype=torch.float64)
    expected = single_neuron_activity(torch.tensor([60.0]), None, path, time_extent=2.0, lam=60.0)
    for drive in (np.array([60.0]), [60.0], np.array([60], dtype=np.int64)):
        got = single_neuron_activity(drive, None, path, time_extent=2.0, lam=60.0)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    net = Network().add_input("x", np.float32(0.5)).add_neuron("y").excite("x", "y", [60.0])
    assert float(net.compile(SamplerConfig(**SMALL)).drive) == 30.0
    with pytest.raises(TypeError, match="strength must be a real number or tensor, got 'x'"):
        Network().add_input("x").add_neuron("y").excite("x", "y", "x")
    with pytest.raises(TypeError, match=r"drive must hold real numbers, got a complex128"):
        single_neuron_activity(np.array([60.0j]), None, path, time_extent=2.0, lam=60.0)


def test_python_bools_and_complex_numbers_are_refused_as_strengths_and_lattices() -> None:
    with pytest.raises(TypeError, match="strength must be a real number or tensor, got True"):
        Network().add_input("x").add_neuron("y").excite("x", "y", True)
    with pytest.raises(TypeError, match=r"lam must be a real number, got \(5000\+0j\)"):
        SamplerConfig(lam=5000 + 0j)
    with pytest.raises(TypeError, match="time_extent must be a real number"):
        single_neuron_activity(torch.ones(1), None, kink_path(**SMALL), time_extent=True, lam=60.0)


def test_numpy_scalars_become_python_numbers_and_the_layer_saves_plain_values() -> None:
    config = SamplerConfig(
        **{**QUICK, "lam": np.float32(60.0), "n_time": np.int64(32), "chains": np.int32(4)}
    )
    assert type(config.lam) is float and type(config.n_time) is int and type(config.chains) is int
    layer = QuantumNeuronLayer(3, 2, config=config)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    loaded = QuantumNeuronLayer(3, 2, config=SamplerConfig(**QUICK))
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert loaded.config == config


def test_gradients_named_as_a_string_are_refused() -> None:
    compiled = relay(120.0).compile(SamplerConfig(**QUICK))
    with pytest.raises(ValueError, match=r"gradients must be a tuple of names .*got 'drive'"):
        run_sampler(compiled, SamplerConfig(**QUICK), gradients="drive")


def test_an_exact_reference_the_grid_cannot_resolve_is_a_clear_error() -> None:
    path = kink_path(32, 1e-9, 5000.0, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"time_extent=1e-09 .* transfer matrix would need"):
        single_neuron_activity(torch.tensor([3000.0]), None, path, time_extent=1e-9, lam=5000.0)
