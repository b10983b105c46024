"""Paper circuits: the builders' wiring (their truth tables: tests/test_reproduce_paper.py)."""

from __future__ import annotations

import pytest
import torch

from qnn_torch import SamplerConfig, circuits
from qnn_torch.network import CompiledNetwork, Network

T = circuits.THRESHOLDS


def compiled(net: Network) -> CompiledNetwork:
    return net.compile(SamplerConfig(n_time=16, dtype=torch.float64))


def excitation(c: CompiledNetwork, src: str, dst: str) -> torch.Tensor:
    """ε[src → dst] between simulated neurons, per network of the batch."""
    assert c.excite is not None
    return c.excite[:, c.order.index(src), c.order.index(dst)]


def inhibition(c: CompiledNetwork, a: str, b: str) -> torch.Tensor:
    assert c.inhibit is not None
    return c.inhibit[:, c.order.index(a), c.order.index(b)]


def drive(c: CompiledNetwork, name: str) -> torch.Tensor:
    """α = Σ_i ε_i·b_i: the excitation of neuron ``name`` by the active inputs."""
    return c.drive[:, c.order.index(name)]


def input_inhibition(c: CompiledNetwork, name: str) -> torch.Tensor:
    """β = Σ_i η_i·b_i²: the inhibition of neuron ``name`` by the active inputs."""
    return c.input_inhibition[:, c.order.index(name)]


# -- builders ---------------------------------------------------------------------------
def test_thresholds_are_apart_and_above_the_baseline():
    assert T.high - T.low >= 0.2 - 1e-9
    assert T.low > 0.131 + 0.2  # the undriven baseline is ≈ 0.131
    assert T.state(T.high + 0.1, 0.04) == "high"
    assert T.state(T.high + 0.1, 0.06) == "undecided"
    assert T.state(T.low - 0.1, 0.04) == "low"
    assert T.state(0.5 * (T.low + T.high), 0.0) == "undecided"


def test_truth_table_inputs_follow_the_pattern_names():
    a, b = circuits.truth_table_inputs()
    assert [f"{int(x)}{int(y)}" for x, y in zip(a, b, strict=True)] == list(circuits.TRUTH_TABLE)


def test_relay_and_chain_strengths_batch_over_k():
    assert drive(compiled(circuits.relay(6000.0)), "y").item() == 6000.0
    k = torch.tensor([0.0, 0.5, 2.0])
    net = circuits.chain(k)
    assert net.inputs == ("x",) and net.neurons == ("n1", "n2", "n3")
    assert net.batch_shape == (3,)
    c = compiled(net)
    assert torch.equal(drive(c, "n1"), 15000.0 * k.double())
    assert torch.equal(excitation(c, "n1", "n2"), 10000.0 * k.double())
    assert torch.equal(excitation(c, "n2", "n3"), 5000.0 * k.double())
    assert torch.all(excitation(c, "n2", "n1") == 0) and torch.all(excitation(c, "n1", "n3") == 0)


def test_and_gate_adds_the_drives():
    a, b = circuits.truth_table_inputs()
    k = torch.tensor([0.5, 1.0])
    c = compiled(circuits.and_gate(a[:, None], b[:, None], k=k))
    expected = circuits.AND_STRENGTH * (a[:, None] + k * b[:, None])
    assert torch.allclose(drive(c, "out"), expected.flatten().double())


def test_not_gate_inhibition_scales_with_k():
    k = torch.tensor([0.0, 1.0])
    c = compiled(circuits.not_gate(k))
    assert torch.all(drive(c, "n1") == circuits.NOT_STRONG)
    assert torch.all(drive(c, "n2") == circuits.NOT_WEAK)
    assert circuits.NOT_STRONG > circuits.NOT_WEAK
    assert torch.equal(inhibition(c, "n1", "n2"), circuits.NOT_INHIBITION * k.double())
    assert torch.equal(inhibition(c, "n2", "n1"), inhibition(c, "n1", "n2"))


def test_or_and_xor_wiring():
    a, b = circuits.truth_table_inputs()
    for builder in (circuits.or_gate, circuits.xor_gate):
        net = builder(a, b)
        assert net.inputs == ("a", "b") and net.neurons == ("ha", "hb", "out")
        c = compiled(net)
        assert torch.equal(drive(c, "ha"), circuits.OR_INPUT * a.double())
        assert torch.equal(drive(c, "hb"), circuits.OR_INPUT * b.double())
        assert torch.all(drive(c, "out") == 0)
        assert torch.all(inhibition(c, "ha", "hb") == circuits.OR_INHIBITION)
        for hidden in ("ha", "hb"):
            assert torch.all(excitation(c, hidden, "out") == circuits.OR_OUTPUT)
            assert torch.all(inhibition(c, hidden, "out") == 0)
    or_c, xor_c = compiled(circuits.or_gate(a, b)), compiled(circuits.xor_gate(a, b))
    assert torch.all(input_inhibition(or_c, "ha") == 0)
    # XOR: input b inhibits ha and input a inhibits hb (β = η·brightness²).
    assert torch.equal(input_inhibition(xor_c, "ha"), circuits.XOR_CROSS * b.double())
    assert torch.equal(input_inhibition(xor_c, "hb"), circuits.XOR_CROSS * a.double())
    assert torch.all(input_inhibition(xor_c, "out") == 0)


def test_conv_layer_is_a_valid_convolution_of_the_input_grid():
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 5, 6, generator=generator)  # a batch of 2 images, 5×6
    excite = torch.rand(3, 2, generator=generator) * 1000 + 1
    inhibit = torch.rand(3, 2, generator=generator) * 1000 + 1
    for stride in (1, 2):
        net = Network()
        grid = circuits.add_input_grid(net, pixels, "p")
        assert grid[4][5] == "p_4_5" and net.batch_shape == (2,)
        layer = circuits.conv_layer(net, grid, excite, inhibit, prefix="h", stride=stride)
        rows, cols = (5 - 3) // stride + 1, (6 - 2) // stride + 1
        assert [len(row) for row in layer] == [cols] * rows and layer[0][0] == "h_0_0"
        c = compiled(net)
        for i in range(rows):
            for j in range(cols):
                window = pixels[:, i * stride : i * stride + 3, j * stride : j * stride + 2]
                expected_drive = (window * excite).sum((-2, -1)).double()
                expected_inhibition = (window**2 * inhibit).sum((-2, -1)).double()
                assert torch.allclose(drive(c, layer[i][j]), expected_drive)
                assert torch.allclose(input_inhibition(c, layer[i][j]), expected_inhibition)


def test_conv_layer_on_neurons_batched_kernels_and_errors():
    net = Network()
    sources = [[f"s{r}{c}" for c in range(3)] for r in range(3)]
    for name in (n for row in sources for n in row):
        net.add_neuron(name)
    kernel = torch.tensor([[[0.0, 1.0], [2.0, 0.0]], [[0.0, 3.0], [4.0, 0.0]]])  # batch of 2
    layer = circuits.conv_layer(net, sources, kernel, None, prefix="h")
    assert net.batch_shape == (2,)
    c = compiled(net)
    # Neuron (i, j) sees sources[i + u][j + v] with kernel[..., u, v].
    assert torch.equal(excitation(c, "s01", "h_0_0"), torch.tensor([1.0, 3.0]).double())
    assert torch.equal(excitation(c, "s12", "h_1_1"), torch.tensor([1.0, 3.0]).double())
    assert torch.equal(excitation(c, "s20", "h_1_0"), torch.tensor([2.0, 4.0]).double())
    assert torch.all(excitation(c, "s00", "h_0_0") == 0)  # a zero entry adds no link
    assert torch.all(excitation(c, "s21", "h_1_0") == 0)
    inhibited = Network().add_neuron("u").add_neuron("v")
    circuits.conv_layer(inhibited, [["u", "v"]], None, [[0.0, 5.0]], prefix="w")
    assert inhibition(compiled(inhibited), "v", "w_0_0").item() == 5.0  # mutual
    assert layer == [["h_0_0", "h_0_1"], ["h_1_0", "h_1_1"]]
    with pytest.raises(ValueError, match="needs an excite_kernel"):
        circuits.conv_layer(Network(), sources, None, None, prefix="x")
    with pytest.raises(ValueError, match="does not fit"):
        circuits.conv_layer(Network(), sources, torch.ones(4, 4), prefix="x")
    with pytest.raises(ValueError, match="same"):
        circuits.conv_layer(Network(), sources, torch.ones(2, 2), torch.ones(3, 3), prefix="x")
    with pytest.raises(ValueError, match="rectangular"):
        circuits.conv_layer(Network(), [["a", "b"], ["c"]], torch.ones(1, 1), prefix="x")
    with pytest.raises(ValueError, match="stride"):
        circuits.conv_layer(Network(), sources, torch.ones(2, 2), prefix="x", stride=0)


def test_vertical_line_detector_wiring():
    excite, inhibit = circuits.vertical_line_kernels()
    assert torch.equal(excite[:, 1], torch.full((3,), circuits.KERNEL_EXCITE).double())
    assert torch.all(excite[:, [0, 2]] == 0) and torch.all(inhibit[:, 1] == 0)
    assert torch.all(inhibit[:, [0, 2]] == circuits.KERNEL_INHIBIT)
    pixels = torch.zeros(2, 4, 4)
    pixels[0, :, 1] = 1.0  # a vertical line in column 1
    pixels[1, 2, :] = 1.0  # a horizontal line in row 2
    net = circuits.vertical_line_detector(pixels)
    assert len(net.inputs) == 16 and net.neurons[-1] == "out" and len(net.neurons) == 5
    c = compiled(net)
    e, i = circuits.KERNEL_EXCITE, circuits.KERNEL_INHIBIT
    # Column 1 is the middle of the left windows and a side of the right ones.
    assert drive(c, "c_0_0").tolist() == [3 * e, e]
    assert input_inhibition(c, "c_0_0").tolist() == [0.0, 2 * i]
    assert drive(c, "c_1_1").tolist() == [0.0, e]
    assert input_inhibition(c, "c_1_1").tolist() == [3 * i, 2 * i]
    for row in range(2):
        for col in range(2):
            assert torch.all(excitation(c, f"c_{row}_{col}", "out") == circuits.DETECTOR_OUTPUT)
    with pytest.raises(ValueError, match="4, 4"):
        circuits.vertical_line_detector(torch.zeros(3, 3))
