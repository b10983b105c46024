"""Network description: named inputs, simulated neurons, excitatory and inhibitory links."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from qnn_torch.config import SamplerConfig
from qnn_torch.functional.physics import (
    input_fields,
    input_spike,
    real_tensor,
    validate_non_negative,
)

Number = float | int | Tensor


def _as_tensor(name: str, value: Number) -> Tensor:
    """A float64 CPU copy of ``value``; a tensor that requires grad stays in the graph.

    NotRealError (a TypeError and a ValueError) for complex, bool or meta values.
    """
    return real_tensor(name, value).to(device="cpu", dtype=torch.float64).clone()


class Network:
    """Builder for a network of quantum neurons.

    Inputs are not sampled: an input of brightness b carries the fixed path ψ̂_b (b = 1
    active, b = 0 passive, in between grey). Simulated neurons are sampled. Strengths and
    brightnesses may be tensors with leading batch dimensions; all of them broadcast to
    one batch shape, so that a sweep over a strength or over input patterns is one batched
    simulation. The network stores a copy of each value as it is passed; a tensor that
    requires grad stays connected to it, so :func:`~qnn_torch.simulate.simulate`'s
    activities are differentiable with respect to it (rebuild the network after an
    optimiser step: building is cheap).

    >>> net = Network()
    >>> net.add_input("x").add_neuron("y").excite("x", "y", 6000.0)  # doctest: +ELLIPSIS
    <qnn_torch.network.Network object at ...>
    """

    def __init__(self) -> None:
        self._inputs: dict[str, Tensor] = {}
        self._neurons: list[str] = []
        self._excite: dict[tuple[str, str], Tensor] = {}
        self._inhibit: dict[tuple[str, str], Tensor] = {}
        self._batch_shape: torch.Size = torch.Size()

    # -- building ---------------------------------------------------------------------
    def add_input(self, name: str, brightness: Number = 1.0) -> Network:
        """Add a fixed input of brightness in [0, 1] (a number or a batch tensor)."""
        self._check_new_name(name)
        value = _as_tensor("brightness", brightness)
        bad = torch.isnan(value) | (value < 0) | (value > 1)
        if bad.any():
            raise ValueError(
                f"brightness of input {name!r} must lie in [0, 1], "
                f"got {value[bad].flatten()[0].item()}"
            )
        self._broadcast("brightness", value)
        self._inputs[name] = value
        return self

    def add_neuron(self, name: str) -> Network:
        """Add a simulated neuron."""
        self._check_new_name(name)
        self._neurons.append(name)
        return self

    def excite(self, src: str, dst: str, strength: Number) -> Network:
        """Excitatory link src → dst: a·ε·φ_dst²·(φ_src² − 1)² per slice. dst is simulated."""
        self._check_known("src", src)
        self._check_known("dst", dst)
        if dst in self._inputs:
            raise ValueError(f"dst must be a simulated neuron, got input {dst!r}")
        self._check_pair("excite", src, dst, (src, dst), self._excite)
        self._excite[(src, dst)] = self._strength(strength)
        return self

    def inhibit(self, a: str, b: str, strength: Number) -> Network:
        """Symmetric inhibitory link: a·η·(φ_a² − 1)⁴·(φ_b² − 1)⁴ per slice."""
        self._check_known("a", a)
        self._check_known("b", b)
        if a in self._inputs and b in self._inputs:
            raise ValueError(f"inhibit needs a simulated neuron, got two inputs {a!r} and {b!r}")
        key = (min(a, b), max(a, b))
        self._check_pair("inhibit", a, b, key, self._inhibit)
        self._inhibit[key] = self._strength(strength)
        return self

    # -- reading ----------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self._inputs)

    @property
    def neurons(self) -> tuple[str, ...]:
        return tuple(self._neurons)

    @property
    def batch_shape(self) -> torch.Size:
        """Broadcast shape of all strengths and brightnesses."""
        return self._batch_shape

    def compile(self, config: SamplerConfig) -> CompiledNetwork:
        """Tensors of the network for ``config``'s lattice, device and dtype."""
        if not self._neurons:
            raise ValueError("network has no simulated neuron: call add_neuron first")
        names = self._neurons
        colors = _greedy_coloring(names, [*self._excite, *self._inhibit], set(self._inputs))
        order = [n for color in colors for n in color]
        index = {n: i for i, n in enumerate(order)}
        inputs = list(self._inputs)
        in_index = {n: i for i, n in enumerate(inputs)}
        n_neurons, n_inputs, shape = len(order), len(inputs), self._batch_shape

        def zeros(*dims: int) -> Tensor:
            return torch.zeros((*shape, *dims), dtype=torch.float64)

        brightness = zeros(max(n_inputs, 1))
        for name, value in self._inputs.items():
            brightness[..., in_index[name]] = value
        in_excite, in_inhibit = (
            zeros(max(n_inputs, 1), n_neurons),
            zeros(max(n_inputs, 1), n_neurons),
        )
        excite, inhibit = zeros(n_neurons, n_neurons), zeros(n_neurons, n_neurons)
        for (src, dst), value in self._excite.items():
            if src in in_index:
                in_excite[..., in_index[src], index[dst]] = value
            else:
                excite[..., index[src], index[dst]] = value
        for (a, b), value in self._inhibit.items():
            if a in in_index or b in in_index:
                inp, neuron = (a, b) if a in in_index else (b, a)
                in_inhibit[..., in_index[inp], index[neuron]] = value
            else:
                inhibit[..., index[a], index[b]] = value
                inhibit[..., index[b], index[a]] = value
        drive, input_inhibition = input_fields(brightness, in_excite, in_inhibit)

        profile, activity_norm = input_spike(
            config.n_time, config.time_extent, config.lam, config.n_kinks
        )
        flat = math.prod(shape)
        to = {"device": torch.device(config.device), "dtype": config.dtype}
        for t in (excite, inhibit, drive, input_inhibition):
            if not torch.isfinite(t.to(config.dtype)).all():
                raise ValueError(
                    f"strength {float(t.abs().max()):.3g} overflows {config.dtype}: "
                    "use smaller strengths or float64"
                )
        bounds, start = [], 0
        for color in colors:
            bounds.append((start, start + len(color)))
            start += len(color)
        return CompiledNetwork(
            names=tuple(names),
            order=tuple(order),
            batch_shape=shape,
            color_bounds=tuple(bounds),
            profile=profile.to(**to),
            activity_norm=activity_norm,
            drive=drive.reshape(flat, n_neurons).to(**to),
            input_inhibition=input_inhibition.reshape(flat, n_neurons).to(**to),
            excite=excite.reshape(flat, n_neurons, n_neurons).to(**to)
            if self._has_links(excite)
            else None,
            inhibit=inhibit.reshape(flat, n_neurons, n_neurons).to(**to)
            if self._has_links(inhibit)
            else None,
        )

    # -- checks -----------------------------------------------------------------------
    @staticmethod
    def _has_links(matrix: Tensor) -> bool:
        """Whether links matter: a non-zero strength, or one whose gradient is wanted."""
        return matrix.requires_grad or bool(matrix.ne(0).any())

    def _check_new_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if name in self._inputs or name in self._neurons:
            raise ValueError(f"name {name!r} is already used (duplicate name)")

    def _check_known(self, argument: str, name: str) -> None:
        if name not in self._inputs and name not in self._neurons:
            raise ValueError(f"{argument} names an unknown input or neuron: {name!r}")

    def _check_pair(
        self, kind: str, a: str, b: str, key: tuple[str, str], links: dict[tuple[str, str], Tensor]
    ) -> None:
        if a == b:
            raise ValueError(f"{kind} connects {a!r} to itself: a connection needs two names")
        if key in links:
            raise ValueError(f"{kind} link {a!r}–{b!r} is already defined (duplicate connection)")

    def _strength(self, strength: Number) -> Tensor:
        value = _as_tensor("strength", strength)
        validate_non_negative("strength", value)
        self._broadcast("strength", value)
        return value

    def _broadcast(self, argument: str, value: Tensor) -> None:
        try:
            self._batch_shape = torch.broadcast_shapes(self._batch_shape, value.shape)
        except RuntimeError:
            raise ValueError(
                f"{argument} of shape {tuple(value.shape)} does not broadcast with the network's "
                f"batch shape {tuple(self._batch_shape)}"
            ) from None


@dataclass(frozen=True)
class CompiledNetwork:
    """A network as tensors, neurons reordered so that each colour is a contiguous range.

    Shapes (Bf = product of the batch shape, N simulated neurons, Nt slices):
    drive (Bf, N) and input_inhibition (Bf, N) are the amplitudes α, β of the input fields
    α·g_t and β·g_t², with g_t = ``profile`` (Nt,); excite (Bf, N, N) holds ε[src, dst] and
    inhibit (Bf, N, N) the symmetric η, or None where the network has no such link.
    Neurons in one colour range share no link, so they can be updated at once.
    ``link_entries`` (P,) int64, if given, holds the flat indices i·N + j of the pairs
    (i, j) whose excite and inhibit entries may be non-zero (the links' pattern): the
    sampler measures the Jacobians of those families for these entries only, and every
    other entry, which is not a parameter, gets no gradient. None: every pair.
    """

    names: tuple[str, ...]
    order: tuple[str, ...]
    batch_shape: torch.Size
    color_bounds: tuple[tuple[int, int], ...]
    profile: Tensor
    activity_norm: float
    drive: Tensor
    input_inhibition: Tensor
    excite: Tensor | None
    inhibit: Tensor | None
    link_entries: Tensor | None = None

    def parameters(self) -> dict[str, Tensor]:
        """The differentiable parameters by family (see :mod:`qnn_torch.functional.gradient`)."""
        families = {"drive": self.drive, "input_inhibition": self.input_inhibition}
        if self.excite is not None:
            families["excite"] = self.excite
        if self.inhibit is not None:
            families["inhibit"] = self.inhibit
        return families


def _greedy_coloring(
    neurons: list[str], links: list[tuple[str, str]], inputs: set[str]
) -> list[list[str]]:
    """Colour the neurons' link graph so that linked neurons differ (largest degree first)."""
    neighbours: dict[str, set[str]] = {n: set() for n in neurons}
    for a, b in links:
        if a not in inputs and b not in inputs:
            neighbours[a].add(b)
            neighbours[b].add(a)
    color_of: dict[str, int] = {}
    for name in sorted(neurons, key=lambda n: -len(neighbours[n])):
        used = {color_of[m] for m in neighbours[name] if m in color_of}
        color_of[name] = next(c for c in range(len(neurons)) if c not in used)
    colors: list[list[str]] = [[] for _ in range(max(color_of.values()) + 1)]
    for name in neurons:
        colors[color_of[name]].append(name)
    return colors


def independent_outputs(
    drive: Tensor, profile: Tensor, activity_norm: float, inhibit: Tensor | None = None
) -> CompiledNetwork:
    """Rows of O outputs driven with amplitudes ``drive`` (B, O) through the spike profile
    (Nt,), linked only by the lateral ``inhibit`` (B, O, O) if given."""
    names = tuple(str(j) for j in range(drive.shape[1]))
    return CompiledNetwork(
        names=names,
        order=names,
        batch_shape=drive.shape[:1],
        color_bounds=tuple((j, j + 1) for j in range(len(names)))
        if inhibit is not None
        else ((0, len(names)),),
        profile=profile.to(drive),
        activity_norm=activity_norm,
        drive=drive,
        input_inhibition=torch.zeros_like(drive),
        excite=None,
        inhibit=inhibit,
    )
