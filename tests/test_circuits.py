"""Paper circuits: the builders' wiring, and the truth tables of a quick reproduction run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qnn_torch import SamplerConfig, circuits, reproduce_paper
from qnn_torch.network import CompiledNetwork, Network

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce_paper.py"
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


def test_script_is_import_safe_and_covers_the_patterns():
    script = reproduce_paper
    assert callable(script.main)
    patterns = script.detector_patterns()
    targets = {name for name, (_, vertical) in patterns.items() if vertical}
    assert targets == {"vertical_col1", "vertical_col2"}
    for name in ("vertical_col0", "vertical_col3", "diagonal", "antidiagonal", "blank", "full"):
        assert name in patterns
    assert sum(name.startswith("horizontal") for name in patterns) == 4
    assert sum(name.startswith("random") for name in patterns) >= 3


# -- quick reproduction -----------------------------------------------------------------
@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("paper")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode in (0, 1), run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    results["_out"] = out
    results["_stdout"] = run.stdout
    return results


def high(entry: dict) -> bool:
    return T.state(entry["activity"], entry["stderr"]) == "high"


def low(entry: dict) -> bool:
    return T.state(entry["activity"], entry["stderr"]) == "low"


def test_quick_run_writes_figures_tables_and_thresholds(quick):
    out = quick["_out"]
    assert quick["quick"] is True and quick["lattice"]["n_time"] == 128
    assert quick["thresholds"] == {"low": T.low, "high": T.high}
    for name in quick["figures"]:
        assert name.startswith("fig") and (out / name).stat().st_size > 0
    assert len(quick["figures"]) == 11
    assert (out / "results.md").read_text() in quick["_stdout"]
    assert all(quick["checks"].values()), quick["checks"]


@pytest.mark.parametrize(
    ("gate", "on"),
    [("AND", {"11"}), ("OR", {"01", "10", "11"}), ("XOR", {"01", "10"})],
)
def test_quick_gate_truth_tables(quick, gate, on):
    table = quick["gates"][gate]
    assert set(table) == set(circuits.TRUTH_TABLE)
    for pattern, entry in table.items():
        assert (high if pattern in on else low)(entry), (gate, pattern, entry)


def test_quick_not_gate(quick):
    assert high(quick["not"]["inhibition_off"]), quick["not"]
    assert low(quick["not"]["inhibition_on"]), quick["not"]


def test_quick_chain_is_opaque_then_transparent(quick):
    chain = quick["chain"]
    kc, baseline = chain["critical_k"], chain["baseline"]
    assert abs(baseline - 0.13) < 0.02
    rows = list(zip(chain["k"], chain["activity"], chain["stderr"], strict=True))
    below = [(a, s) for k, a, s in rows if k <= 0.9 * kc]
    above = [(a, s) for k, a, s in rows if k >= 1.2 * kc]
    assert below and above
    for a, s in below:
        assert abs(a - baseline) + 2 * s < 0.1, (a, s)
    for a, s in above:
        assert a - 2 * s > 0.5, (a, s)


def test_quick_detector_ranks_middle_vertical_lines_first(quick):
    detector = quick["detector"]
    targets = [p for p in detector.values() if p["vertical"]]
    others = [p for p in detector.values() if not p["vertical"]]
    assert len(targets) == 2 and len(others) >= 12
    assert min(p["activity"] - 2 * p["stderr"] for p in targets) > max(
        p["activity"] + 2 * p["stderr"] for p in others
    )
    assert all(high(p) for p in targets)
