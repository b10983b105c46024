"""A convolutional first layer of quantum neurons: shared kernels over the image grid.

Neurons form ``channels`` maps over an H×W image: neuron (c, i, j), numbered
c·R·S + i·S + j on an R×S map, sees the pixels of a valid convolution with stride s
(as :func:`qnn_torch.circuits.conv_layer`, the paper's Fig. 19, with several channels):

    ε̂_{(c,i,j), (i·s+u)·W + (j·s+v)} = κ_c[u, v]     (0 for pixels outside the window)

The kernels κ (C, kh, kw) thus fill the dense coupling matrix (C·R·S, H·W) of a quantum
MLP's first layer, for excitation and inhibition alike, and the network is a
:class:`~qnn_torch.QuantumMLP` in every other respect. Every neuron's window lies inside
the image, so each row of the matrix sums to its channel's kernel sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qnn_torch.config import check_int


def _pair(name: str, value: object) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    for v in pair:
        check_int(name, v, 1)
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class ConvGeometry:
    """The shape of a convolutional layer (module doc): ``image`` (H, W), ``channels`` C,
    ``kernel`` (kh, kw) and ``stride`` s; an int stands for a square. ValueError, naming
    the field, for anything else or for a kernel larger than the image."""

    image: tuple[int, int]
    channels: int
    kernel: tuple[int, int]
    stride: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", _pair("image", self.image))
        object.__setattr__(self, "kernel", _pair("kernel", self.kernel))
        check_int("channels", self.channels, 1)
        check_int("stride", self.stride, 1)
        if any(k > n for k, n in zip(self.kernel, self.image, strict=True)):
            raise ValueError(f"kernel {self.kernel} does not fit the image {self.image}")

    @property
    def maps(self) -> tuple[int, int]:
        """(R, S): each channel's map of neurons."""
        pairs = zip(self.image, self.kernel, strict=True)
        return tuple((n - k) // self.stride + 1 for n, k in pairs)

    @property
    def inputs(self) -> int:
        """H·W."""
        return self.image[0] * self.image[1]

    @property
    def neurons(self) -> int:
        """C·R·S."""
        rows, cols = self.maps
        return self.channels * rows * cols

    @property
    def share(self) -> float:
        """kh·kw/(H·W): the share of the image one neuron sees."""
        return self.kernel[0] * self.kernel[1] / self.inputs

    @property
    def kernel_shape(self) -> tuple[int, int, int]:
        """(C, kh, kw)."""
        return (self.channels, *self.kernel)

    def as_state(self) -> dict[str, object]:
        """Plain values, for state dicts and JSON."""
        return {
            "image": list(self.image),
            "channels": self.channels,
            "kernel": list(self.kernel),
            "stride": self.stride,
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> ConvGeometry:
        """Inverse of :meth:`as_state`."""
        return cls(
            image=tuple(state["image"]),
            channels=state["channels"],
            kernel=tuple(state["kernel"]),
            stride=state["stride"],
        )


def checked_geometry(conv: object) -> ConvGeometry | None:
    """``conv`` as a geometry: None, a :class:`ConvGeometry`, or its
    :meth:`~ConvGeometry.as_state` (as hyperparameters store it); ValueError otherwise."""
    if conv is None or isinstance(conv, ConvGeometry):
        return conv
    if isinstance(conv, dict) and set(conv) == {"image", "channels", "kernel", "stride"}:
        return ConvGeometry.from_state(conv)
    raise ValueError(f"conv must be a ConvGeometry, its as_state() or None, got {conv!r}")


def geometry_state(conv: ConvGeometry | None) -> dict[str, object] | None:
    """``conv.as_state()``, or None for no geometry (the inverse of
    :func:`checked_geometry`)."""
    return None if conv is None else conv.as_state()


def window_pixels(geometry: ConvGeometry) -> Tensor:
    """Pixel index (i·s + u)·W + (j·s + v) of every window entry, (R·S, kh·kw) int64."""
    rows, cols = geometry.maps
    kh, kw = geometry.kernel
    s, width = geometry.stride, geometry.image[1]
    top = (torch.arange(rows) * s)[:, None, None, None] + torch.arange(kh)[None, None, :, None]
    left = (torch.arange(cols) * s)[None, :, None, None] + torch.arange(kw)[None, None, None, :]
    return (top * width + left).reshape(rows * cols, kh * kw)


def conv_couplings(kernels: Tensor, geometry: ConvGeometry, pixels: Tensor | None = None) -> Tensor:
    """The dense couplings (C·R·S, H·W) of kernels κ (C, kh, kw) (module doc), in κ's dtype
    and device, differentiable in κ (each kernel entry's gradient sums over its windows).
    ``pixels``: :func:`window_pixels` of ``geometry`` on κ's device, if kept at hand."""
    if tuple(kernels.shape) != geometry.kernel_shape:
        raise ValueError(
            f"kernels must have shape {geometry.kernel_shape}, got {tuple(kernels.shape)}"
        )
    if pixels is None:
        pixels = window_pixels(geometry).to(kernels.device)
    positions = pixels.shape[0]
    values = kernels.reshape(geometry.channels, 1, -1).expand(-1, positions, -1)
    dense = kernels.new_zeros(geometry.channels, positions, geometry.inputs)
    dense = dense.scatter(-1, pixels.expand(geometry.channels, -1, -1), values)
    return dense.reshape(geometry.neurons, geometry.inputs)
