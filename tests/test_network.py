"""Network builder and configuration: structure, batching, and clear errors on bad input."""

import math

import numpy as np
import pytest
import torch

from qnn_torch import Network, SamplerConfig, simulate


def test_batch_shapes_broadcast_and_compile():
    net = (
        Network()
        .add_input("a", brightness=torch.tensor([0.0, 1.0]))
        .add_input("b", brightness=0.5)
        .add_neuron("x")
        .add_neuron("y")
        .excite("a", "x", torch.tensor([[1.0], [2.0], [3.0]]))
        .excite("b", "x", 4.0)
        .excite("x", "y", 5.0)
        .inhibit("b", "y", 6.0)
    )
    assert net.batch_shape == (3, 2)
    compiled = net.compile(SamplerConfig(n_time=16, dtype=torch.float64))
    # x and y are linked, so they get different colours.
    assert len(compiled.color_bounds) == 2
    x, y = compiled.order.index("x"), compiled.order.index("y")
    drive = compiled.drive.view(3, 2, 2)
    # α_x = Σ_i ε_ix·b_i = ε_ax·b_a + 4·0.5.
    assert torch.allclose(
        drive[:, :, x], torch.tensor([[2.0, 3.0], [2.0, 4.0], [2.0, 5.0]]).double()
    )
    assert torch.allclose(
        compiled.input_inhibition.view(3, 2, 2)[..., y], torch.tensor(6.0 * 0.25).double()
    )
    assert compiled.excite is not None and compiled.excite[0, x, y] == 5.0
    assert compiled.inhibit is None


def test_uncoupled_neurons_share_one_colour():
    net = Network().add_input("i").add_neuron("x").add_neuron("y").excite("i", "x", 1.0)
    assert len(net.compile(SamplerConfig(n_time=16)).color_bounds) == 1


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda n: n.excite("a", "x", -1.0), "strength"),
        (lambda n: n.inhibit("x", "y", torch.tensor([1.0, -2.0])), "strength"),
        (lambda n: n.excite("a", "x", math.inf), "strength"),
        (lambda n: n.add_input("c", brightness=1.5), "brightness"),
        (lambda n: n.add_input("c", brightness=-0.1), "brightness"),
        (lambda n: n.add_input("c", brightness=math.nan), "brightness"),
        (lambda n: n.add_input("c", brightness=torch.tensor([0.2, math.nan])), "brightness"),
        (lambda n: n.excite("a", "nobody", 1.0), "dst.*'nobody'"),
        (lambda n: n.excite("ghost", "x", 1.0), "src.*'ghost'"),
        (lambda n: n.inhibit("x", "ghost", 1.0), "'ghost'"),
        (lambda n: n.add_neuron("x"), "duplicate.*'x'|'x'.*duplicate"),
        (lambda n: n.add_input("x"), "'x'.*already"),
        (lambda n: n.excite("x", "x", 1.0), "itself"),
        (lambda n: n.inhibit("y", "y", 1.0), "itself"),
        (lambda n: n.excite("x", "a", 1.0), "dst.*input"),
        (lambda n: n.excite("a", "x", 1.0).excite("a", "x", 2.0), "duplicate"),
        (
            lambda n: n.excite("a", "x", torch.ones(3)).excite("a", "y", torch.ones(4)),
            r"strength of shape \(4,\) does not broadcast",
        ),
        (
            lambda n: n.excite("a", "x", torch.ones(3)).add_input("c", torch.ones(2) / 2),
            r"brightness of shape \(2,\) does not broadcast",
        ),
    ],
)
def test_bad_network_input_names_the_argument(build, match):
    net = Network().add_input("a").add_neuron("x").add_neuron("y")
    with pytest.raises(ValueError, match=match):
        build(net)


def test_simulate_needs_a_neuron_and_a_network():
    with pytest.raises(ValueError, match="no simulated neuron"):
        simulate(Network().add_input("a"), SamplerConfig(n_time=16))
    with pytest.raises(ValueError, match=r"network must be a qnn_torch\.Network, got str"):
        simulate("not a network", SamplerConfig(n_time=16))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_time": 33}, "n_time"),
        ({"n_time": 0}, "n_time"),
        ({"time_extent": 0.0}, "time_extent"),
        ({"time_extent": -0.7}, "time_extent"),
        ({"lam": 0.0}, "lam"),
        ({"lam": -5.0}, "lam"),
        ({"n_kinks": 3}, "n_kinks"),
        ({"n_kinks": -2}, "n_kinks"),
        ({"chains": 1}, "chains"),
        ({"sweeps": 0}, "sweeps"),
        ({"thermalization": -1}, "thermalization"),
        ({"algorithm": "metropolis"}, "algorithm"),
        ({"algorithm": "cluster"}, "algorithm"),
        ({"init": "random"}, "init"),
        ({"dtype": torch.float16}, "dtype"),
        ({"bisection_levels": 10, "n_time": 512}, "bisection_levels"),
        ({"time_extent": "0.7"}, "time_extent must be a real number, got '0.7'"),
        ({"target_acceptance": "x"}, "target_acceptance must be a real number"),
        ({"lam": True}, "lam must be a real number, got True"),
        ({"device": "gpu0"}, "device must be a torch.device or a string such as 'cpu'"),
    ],
)
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SamplerConfig(**kwargs)


def test_config_takes_numpy_numbers():
    config = SamplerConfig(time_extent=np.float32(0.7), lam=np.int64(5000), n_time=16)
    assert config.spacing == pytest.approx(0.7 / 16)
