"""Circuits of quantum neurons from Dorozhinsky & Pavlovsky (arXiv:1806.09664), as Networks.

Every builder returns a :class:`~qnn_torch.network.Network` and simulates nothing. Strengths
and brightnesses may be tensors with leading batch dimensions that broadcast, so a sweep
over a strength or over input patterns is one batched network (see
:func:`truth_table_inputs`). The defaults are the parameters with which this project
reproduces the paper's behaviour at the paper's lattice (Λ = 5000, T = 0.7, Nt = 512);
where they differ from the paper's, the docstring says so and why. Read activities against
:data:`THRESHOLDS`.

Links act both ways, as terms of one action: an excitation src → dst also makes it costly
for src to spike alone (its well deepens by ε·φ_dst²), and an inhibition between two
neurons suppresses whichever of them is driven less.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from qnn_torch.functional.conv import ConvGeometry
from qnn_torch.network import Network, Number


@dataclass(frozen=True)
class Thresholds:
    """Activity levels that count as on (above ``high``) and off (below ``low``).

    An undriven neuron sits at its zero-point baseline ≈ 0.13 and a neuron that copies the
    input's spikes near 1; activities between ``low`` and ``high`` are undecided.
    """

    low: float
    high: float

    def state(self, activity: float, stderr: float, sigmas: float = 2.0) -> str:
        """``"high"``, ``"low"`` or ``"undecided"``: where activity ± sigmas·stderr lies."""
        if activity - sigmas * stderr > self.high:
            return "high"
        if activity + sigmas * stderr < self.low:
            return "low"
        return "undecided"


THRESHOLDS = Thresholds(low=0.4, high=0.6)
"""The on/off levels of every circuit: low 0.27 above the baseline, high 0.2 above low."""

TRUTH_TABLE = ("00", "01", "10", "11")
"""Input patterns "ab" of two-input gates, in the order of :func:`truth_table_inputs`."""

# Default strengths of the builders below (their docstrings compare them with the paper's).
CHAIN_STRENGTHS = (15000.0, 10000.0, 5000.0)
CHAIN_CRITICAL_K = 1.0
AND_STRENGTH = 1650.0
NOT_STRONG, NOT_WEAK, NOT_INHIBITION = 8000.0, 4000.0, 50000.0
OR_INPUT, OR_INHIBITION, OR_OUTPUT = 8000.0, 50000.0, 6000.0
XOR_CROSS = 50000.0
KERNEL_EXCITE, KERNEL_INHIBIT, DETECTOR_OUTPUT = 2000.0, 15000.0, 4000.0


def truth_table_inputs() -> tuple[Tensor, Tensor]:
    """Brightnesses (a, b), each of shape (4,), of the patterns of :data:`TRUTH_TABLE`."""
    a = torch.tensor([float(p[0]) for p in TRUTH_TABLE])
    b = torch.tensor([float(p[1]) for p in TRUTH_TABLE])
    return a, b


def relay(strength: Number, *, brightness: Number = 1.0) -> Network:
    """Relay (paper Fig. 4, 5): input ``x`` excites neuron ``y`` with ``strength``.

    The paper's workable range is 3000–8000; its activity 0.92 at 6000 is 1.30 here, the
    exact value on the lattice (the paper's Monte Carlo was presumably not equilibrated).
    """
    return Network().add_input("x", brightness).add_neuron("y").excite("x", "y", strength)


def chain(
    k: Number, *, strengths: Sequence[float] = CHAIN_STRENGTHS, brightness: Number = 1.0
) -> Network:
    """Chain (paper Fig. 6–8): input ``x`` → ``n1`` → ``n2`` → … with strengths k·strengths.

    The paper's ε1, ε2, ε3 = k·(1.5, 1.0, 0.5)·10⁴, unchanged. The last neuron stays at its
    zero-point baseline (opaque) below :data:`CHAIN_CRITICAL_K` and copies the input
    (transparent) above it: each neuron may spike only if the next one follows, so the
    chain switches as a whole.
    """
    net = Network().add_input("x", brightness)
    source = "x"
    for i, strength in enumerate(strengths, start=1):
        net.add_neuron(f"n{i}").excite(source, f"n{i}", k * strength)
        source = f"n{i}"
    return net


def and_gate(
    a: Number = 1.0, b: Number = 1.0, *, strength: Number = AND_STRENGTH, k: Number = 1.0
) -> Network:
    """AND (paper Fig. 10, 11): inputs ``a`` and ``b`` excite ``out`` with ε̂ and k·ε̂.

    The drives add, so ``out`` is on only when both inputs are: the activity with both on
    is a smoothed step in k. The paper's ε̂ = 8000 drives ``out`` to 1.58 with one input
    alone (exact value), so ε̂ = 1650 here: 0.31 with one input, 0.70 with both.
    """
    return (
        Network()
        .add_input("a", a)
        .add_input("b", b)
        .add_neuron("out")
        .excite("a", "out", strength)
        .excite("b", "out", k * strength)
    )


def not_gate(
    k: Number = 1.0,
    *,
    brightness: Number = 1.0,
    strong: Number = NOT_STRONG,
    weak: Number = NOT_WEAK,
    inhibition: Number = NOT_INHIBITION,
) -> Network:
    """NOT (paper Fig. 13, 14): input ``x`` excites ``n1`` (strong) and ``n2`` (weak); the two
    inhibit each other with k·5·10⁴.

    ``n2`` is the output: on without inhibition (k = 0), off once ``n1`` suppresses it
    (k ≳ 0.2). The paper gives only ε1 > ε2; 8000 and 4000 are this project's choice.
    """
    return (
        Network()
        .add_input("x", brightness)
        .add_neuron("n1")
        .add_neuron("n2")
        .excite("x", "n1", strong)
        .excite("x", "n2", weak)
        .inhibit("n1", "n2", k * inhibition)
    )


def or_gate(
    a: Number = 1.0,
    b: Number = 1.0,
    *,
    excite: Number = OR_INPUT,
    inhibit: Number = OR_INHIBITION,
    output: Number = OR_OUTPUT,
) -> Network:
    """OR (paper Fig. 15, 17): ``a`` → ``ha`` and ``b`` → ``hb`` with ε̂ = 8000, ``ha`` and
    ``hb`` inhibit each other, both excite ``out``.

    The inhibition lets one of ``ha``, ``hb`` spike at a time, so ``out`` follows
    max(a, b) rather than a + b. The paper does not give the inhibition and the output
    strength; 5·10⁴ and 6000 are this project's choice.
    """
    return (
        Network()
        .add_input("a", a)
        .add_input("b", b)
        .add_neuron("ha")
        .add_neuron("hb")
        .add_neuron("out")
        .excite("a", "ha", excite)
        .excite("b", "hb", excite)
        .inhibit("ha", "hb", inhibit)
        .excite("ha", "out", output)
        .excite("hb", "out", output)
    )


def xor_gate(
    a: Number = 1.0,
    b: Number = 1.0,
    *,
    excite: Number = OR_INPUT,
    inhibit: Number = OR_INHIBITION,
    output: Number = OR_OUTPUT,
    cross: Number = XOR_CROSS,
) -> Network:
    """XOR (paper Fig. 16, 18): :func:`or_gate` plus the inhibitions ``a``–``hb`` and
    ``b``–``ha`` (``cross``), which silence both hidden neurons when both inputs are on.

    Read as hidden → output 3000 and input → hidden 10000, the paper's ε1, ε2 leave ``out``
    at 0.65 for one input, close to the high threshold; the OR's strengths give 0.8.
    """
    return (
        or_gate(a, b, excite=excite, inhibit=inhibit, output=output)
        .inhibit("a", "hb", cross)
        .inhibit("b", "ha", cross)
    )


def add_input_grid(network: Network, brightness: Tensor, prefix: str) -> list[list[str]]:
    """Add an input ``{prefix}_{row}_{col}`` per pixel of ``brightness`` (*batch, H, W).

    Returns the grid of names, rows first, for :func:`conv_layer`.
    """
    if brightness.ndim < 2:
        raise ValueError(
            f"brightness must have shape (*batch, H, W), got {tuple(brightness.shape)}"
        )
    height, width = brightness.shape[-2:]
    names = [[f"{prefix}_{r}_{c}" for c in range(width)] for r in range(height)]
    for r, row in enumerate(names):
        for c, name in enumerate(row):
            network.add_input(name, brightness[..., r, c])
    return names


def conv_layer(
    network: Network,
    inputs: Sequence[Sequence[str]],
    excite_kernel: Tensor | None,
    inhibit_kernel: Tensor | None = None,
    *,
    prefix: str,
    stride: int = 1,
) -> list[list[str]]:
    """Add a valid convolutional layer of neurons ``{prefix}_{i}_{j}`` on a grid of sources.

    Neuron (i, j) sees the sources ``inputs[i·stride + u][j·stride + v]``: source (u, v)
    excites it with ``excite_kernel[..., u, v]`` and inhibits it with
    ``inhibit_kernel[..., u, v]``. Kernels have shape (*batch, kh, kw) (leading dimensions
    batch the strengths); a kernel entry that is 0 across the batch adds no link, and
    either kernel may be None. The sources may be inputs or neurons (for which an
    inhibition is mutual). Returns the grid of the new neurons' names.
    """
    excite, inhibit = (
        None if kernel is None else torch.as_tensor(kernel, dtype=torch.float64)
        for kernel in (excite_kernel, inhibit_kernel)
    )
    kernels = [kernel for kernel in (excite, inhibit) if kernel is not None]
    if not kernels:
        raise ValueError("conv_layer needs an excite_kernel or an inhibit_kernel")
    shape = kernels[0].shape[-2:]
    if any(kernel.ndim < 2 or kernel.shape[-2:] != shape for kernel in kernels):
        raise ValueError(
            "kernels must have shape (*batch, kh, kw), the same (kh, kw) for both, got "
            f"{[tuple(kernel.shape) for kernel in kernels]}"
        )
    height, width = len(inputs), len(inputs[0]) if inputs else 0
    if any(len(row) != width for row in inputs):
        raise ValueError("inputs must be a rectangular grid of names")
    kh, kw = shape
    geometry = ConvGeometry(image=(height, width), channels=1, kernel=(kh, kw), stride=stride)
    rows, cols = geometry.maps
    names = [[f"{prefix}_{i}_{j}" for j in range(cols)] for i in range(rows)]
    for i, row in enumerate(names):
        for j, name in enumerate(row):
            network.add_neuron(name)
            for u in range(kh):
                for v in range(kw):
                    source = inputs[i * stride + u][j * stride + v]
                    if excite is not None and excite[..., u, v].ne(0).any():
                        network.excite(source, name, excite[..., u, v])
                    if inhibit is not None and inhibit[..., u, v].ne(0).any():
                        network.inhibit(source, name, inhibit[..., u, v])
    return names


def vertical_line_kernels(
    excite: Number = KERNEL_EXCITE, inhibit: Number = KERNEL_INHIBIT
) -> tuple[Tensor, Tensor]:
    """3×3 kernels of the detector (paper Fig. 19): (excite, inhibit), each (*batch, 3, 3).

    The middle column excites with ``excite`` and the side columns inhibit with ``inhibit``.
    """
    excite, inhibit = (torch.as_tensor(s, dtype=torch.float64) for s in (excite, inhibit))
    middle = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand(3, 3)
    return excite[..., None, None] * middle, inhibit[..., None, None] * (1.0 - middle)


def vertical_line_detector(
    pixels: Tensor,
    *,
    excite: Number = KERNEL_EXCITE,
    inhibit: Number = KERNEL_INHIBIT,
    output: Number = DETECTOR_OUTPUT,
) -> Network:
    """Vertical-line detector (paper Fig. 19, 20): 4×4 pixels → 2×2 neurons → ``out``.

    ``pixels`` (*batch, 4, 4) are the brightnesses of inputs ``p_{r}_{c}``. Layer ``c``
    is a valid 3×3 convolution with :func:`vertical_line_kernels` (the paper's 2000 and
    15000); its four neurons excite ``out`` with 4000. ``out`` is high for a vertical line
    in one of the two middle columns and low for anything else. Parameters as in the paper.
    """
    if pixels.shape[-2:] != (4, 4):
        raise ValueError(f"pixels must have shape (*batch, 4, 4), got {tuple(pixels.shape)}")
    net = Network()
    grid = add_input_grid(net, pixels, "p")
    layer = conv_layer(net, grid, *vertical_line_kernels(excite, inhibit), prefix="c")
    net.add_neuron("out")
    for name in (name for row in layer for name in row):
        net.excite(name, "out", output)
    return net
