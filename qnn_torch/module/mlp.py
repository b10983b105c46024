"""QuantumMLP: layers of quantum neurons, all simulated jointly by the path-integral sampler."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from qnn_torch.autograd import attach_jacobian
from qnn_torch.config import SamplerConfig, check_choice, check_int, check_number
from qnn_torch.functional.conv import (
    ConvGeometry,
    checked_geometry,
    conv_couplings,
    geometry_state,
    window_pixels,
)
from qnn_torch.functional.layer import (
    READOUTS,
    check_decision,
    checked_brightness,
    checked_sigmas,
    decided,
    readout,
)
from qnn_torch.functional.mean_field import MeanFieldWarning, mean_field_activities
from qnn_torch.functional.mlp import layer_bounds, link_entries, mlp_fields
from qnn_torch.functional.physics import input_fields, input_spike
from qnn_torch.functional.twin import (
    GRID,
    checked_grid,
    coupling_limits,
    twin_activities,
    twin_tables,
)
from qnn_torch.module.layer import DEFAULT_COUPLING_SCALE
from qnn_torch.network import CompiledNetwork
from qnn_torch.simulate import run_sampler, wanted_gradients

ESTIMATORS = ("monte_carlo", "mean_field", "twin")
TWIN_ITERATIONS = 8
BOUND_MARGIN = 0.99  # bound_to_twin_ keeps sums this far inside the tables
TWIN_TOLERANCE = 1e-3


def _checked_sizes(sizes: object) -> tuple[int, ...]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise ValueError(
            f"sizes must be a sequence of at least two positive integers, got {sizes!r}"
        )
    values = tuple(sizes)
    if len(values) < 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
    ):
        raise ValueError(
            f"sizes must be a sequence of at least two positive integers, got {sizes!r}"
        )
    return values


def _checked_conv(conv: object, sizes: tuple[int, ...]) -> ConvGeometry | None:
    conv = checked_geometry(conv)
    if conv is None:
        return None
    if sizes[:2] != (conv.inputs, conv.neurons):
        raise ValueError(
            f"sizes must start with {(conv.inputs, conv.neurons)}, the image's pixels and the "
            f"neurons of conv={conv}, got sizes={sizes}"
        )
    return conv


class QuantumMLP(nn.Module):
    """Hidden layers of quantum neurons between fixed inputs and quantum outputs.

    ``sizes`` = (I, n_1, …, n_L): I inputs of brightness in [0, 1], then L layers of
    simulated neurons, the last one the outputs. Layer 1 is driven by the inputs (drive
    k·ε̂⁽¹⁾·b as in :class:`QuantumNeuronLayer`, and inhibition k_η·η̂⁽¹⁾·b²); each further
    layer is excited by the one before with ε = k·ε̂⁽ˡ⁾ and, with ``inhibition``, inhibited
    with η = k_η·η̂⁽ˡ⁾ (formulas in :mod:`qnn_torch.functional.mlp`). k =
    ``coupling_scale``, k_η = ``inhibition_scale`` (buffers); ε̂ (``excite[l − 1]``) and η̂
    (``inhibit[l − 1]``, zeros at first) are ``nn.Parameter``s of shape (n_l, n_{l−1}),
    kept ≥ 0 by :meth:`project_weights_` after each optimiser step.

    ``conv`` (a :class:`~qnn_torch.functional.conv.ConvGeometry`, or its ``as_state()``)
    makes layer 1 convolutional: ``excite[0]`` and ``inhibit[0]`` are then kernels
    (C, kh, kw), shared by every position of a channel's map, and ``sizes`` starts with
    (H·W, C·R·S). Everything else (estimators, gradients, decision mode) sees the dense
    couplings they fill (:func:`~qnn_torch.functional.conv.conv_couplings`), and the kernels
    receive the gradients of all their positions.

    The forward pass samples every neuron of every layer in one batched simulation
    (:func:`~qnn_torch.simulate.run_sampler`, layer by layer as colours), so each layer
    feels the actual paths of its neighbours, back-reaction included: a link ε deepens
    its source's well where the destination sits in one, and suppresses the source's
    spikes. ``forward`` maps (..., I) to the outputs' scores (..., n_L) (``readout`` as for
    :class:`QuantumNeuronLayer`); :meth:`activities` gives every layer's activities.
    Both are differentiable with respect to every coupling and the input, through the
    covariance estimator ∂A/∂θ = −Cov(O, ∂S/∂θ) measured in the same run, for the links
    between consecutive layers only (:func:`~qnn_torch.functional.mlp.link_entries`).
    ``forward`` measures the Jacobians of the outputs' activities alone, n_L·(N + 2·P)
    entries per input and chain (N = Σ n_l neurons, P the links, per family); through
    :meth:`activities` every layer's activities are differentiable, N·(N + 2·P) entries.
    The seed is fixed by ``config`` (``seed`` overrides it per call).

    ``estimator="mean_field"`` replaces the sampler by the time-resolved mean field
    (:mod:`qnn_torch.functional.mean_field`): each neuron exact in its neighbours' average
    fields, back-reaction included, deterministic, float64 on the CPU, and not
    differentiable (evaluate it under ``torch.no_grad()``); ``last_stderr`` is then None
    (its error is the mean field's, not a statistical one).
    It is slow at the paper's lattice (~0.15 s per neuron, input and iteration).

    ``estimator="twin"`` (one hidden layer, no hidden–output inhibition) is that mean field
    with each time profile reduced to a few coefficients and each neuron's response read
    from exact tables (:mod:`qnn_torch.functional.twin`, built once per lattice): fast and
    differentiable by autograd, for training; the Monte Carlo then evaluates the same
    couplings. ``twin_grid`` sets the tables' nodes per axis
    (:data:`~qnn_torch.functional.twin.GRID`).

    Decision mode (``decision_sigmas`` > 0, for classification, without gradients): the
    whole network of each input is sampled in blocks of ``config.sweeps`` until its top
    output leads every other by ``decision_sigmas`` standard errors of their chain-by-chain
    margin (:func:`~qnn_torch.functional.layer.decided`) or up to ``config.max_sweeps``;
    ``last_sweeps`` holds each input's measurement sweeps.

    ``conditional_every`` = k > 0 (evaluation, without gradients) measures the outputs
    Rao–Blackwellised: every k sweeps, each output's activity is its exact expectation given
    the hidden layers' current paths (a one-neuron transfer matrix,
    :mod:`qnn_torch.functional.conditional`) instead of its own path. Same mean; the
    outputs' own quantum fluctuation, most of their error, is gone. k must divide
    ``config.sweeps`` (and ``config.max_sweeps`` in decision mode or with
    ``config.target_stderr``). It needs a hidden layer (without one, the outputs are
    unlinked and :class:`QuantumNeuronLayer`'s exact estimator gives their activities).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        config: SamplerConfig | None = None,
        readout: str = "softmax",
        coupling_scale: float = DEFAULT_COUPLING_SCALE,
        inhibition_scale: float = DEFAULT_COUPLING_SCALE,
        inhibition: bool = True,
        estimator: str = "monte_carlo",
        decision_sigmas: float = 0.0,
        twin_grid: Sequence[int] = GRID,
        conditional_every: int = 0,
        conv: ConvGeometry | dict[str, object] | None = None,
    ) -> None:
        super().__init__()
        self.sizes = _checked_sizes(sizes)
        self.conv = _checked_conv(conv, self.sizes)
        self.twin_grid = checked_grid(twin_grid)
        if not isinstance(inhibition, bool):
            raise ValueError(f"inhibition must be True or False, got {inhibition!r}")
        self.readout = readout
        self.estimator = estimator
        shapes = [(o, i) for o, i in zip(self.sizes[1:], self.sizes[:-1], strict=True)]
        if self.conv is not None:
            shapes[0] = self.conv.kernel_shape
        self.excite = nn.ParameterList(nn.Parameter(torch.rand(shape)) for shape in shapes)
        self.inhibit = (
            nn.ParameterList(nn.Parameter(torch.zeros(shape)) for shape in shapes)
            if inhibition
            else None
        )
        for name, value in (
            ("coupling_scale", coupling_scale),
            ("inhibition_scale", inhibition_scale),
        ):
            self.register_buffer(name, torch.tensor(check_number(name, value, float32=True)))
        self.register_buffer("spike_profile", torch.empty(0), persistent=False)
        if self.conv is not None:
            self.register_buffer("conv_pixels", window_pixels(self.conv), persistent=False)
        self.register_buffer("link_entries", link_entries(self.sizes), persistent=False)
        self.config = SamplerConfig() if config is None else config
        self.decision_sigmas = decision_sigmas
        self.conditional_every = conditional_every
        self.last_stderr: tuple[Tensor, ...] | None = None
        self.last_sweeps: Tensor | None = None
        self.names = tuple(
            f"{layer + 1}.{j}" for layer, size in enumerate(self.sizes[1:]) for j in range(size)
        )

    @property
    def readout(self) -> str:
        """``"softmax"``, ``"activity"`` or ``"born"`` (as for QuantumNeuronLayer)."""
        return self._readout

    @readout.setter
    def readout(self, readout: str) -> None:
        self._readout = check_choice("readout", readout, READOUTS)

    @property
    def conditional_every(self) -> int:
        """Sweeps between Rao–Blackwell measurements of the outputs (0: off; class doc)."""
        return self._conditional_every

    @conditional_every.setter
    def conditional_every(self, every: int) -> None:
        check_int("conditional_every", every, 0)
        if every and len(self.sizes) < 3:
            raise ValueError(
                f"conditional_every={every} needs a hidden layer, got sizes={self.sizes}: "
                "unlinked outputs are given exactly by QuantumNeuronLayer(estimator='exact')"
            )
        self._conditional_every = every

    @property
    def estimator(self) -> str:
        """``"monte_carlo"``, ``"mean_field"`` or ``"twin"`` (see the class doc); may be
        reassigned."""
        return self._estimator

    @estimator.setter
    def estimator(self, estimator: str) -> None:
        self._estimator = check_choice("estimator", estimator, ESTIMATORS)

    @property
    def decision_sigmas(self) -> float:
        """Decision mode's margin at the outputs, in standard errors (0: off)."""
        return self._decision_sigmas

    @decision_sigmas.setter
    def decision_sigmas(self, sigmas: float) -> None:
        sigmas = checked_sigmas(sigmas)
        check_decision(sigmas, self.sizes[-1], self.config)
        self._decision_sigmas = sigmas

    @property
    def config(self) -> SamplerConfig:
        """The sampler settings; assigning new ones rebuilds the spike profile."""
        return self._config

    @config.setter
    def config(self, config: SamplerConfig) -> None:
        if not isinstance(config, SamplerConfig):
            raise ValueError(f"config must be a SamplerConfig, got {type(config).__name__}")
        profile, self.activity_norm = input_spike(
            config.n_time, config.time_extent, config.lam, config.n_kinks
        )
        self._config = config
        self.spike_profile = profile.to(self.coupling_scale.device)

    def get_extra_state(self) -> dict[str, object]:
        """The config and ``readout`` as plain values (``weights_only`` loads)."""
        return {
            "config": self.config.as_state(),
            "readout": self.readout,
            "estimator": self.estimator,
            "decision_sigmas": self.decision_sigmas,
            "twin_grid": list(self.twin_grid),
            "conditional_every": self.conditional_every,
            "conv": geometry_state(self.conv),
        }

    def set_extra_state(self, state: dict[str, object]) -> None:
        saved = state.get("conv")  # first: a state of another geometry changes nothing here
        if checked_geometry(saved) != self.conv:
            raise ValueError(f"the state's conv {saved!r} differs from this network's {self.conv}")
        self.config = SamplerConfig.from_state(state["config"])
        self.readout = state["readout"]
        self.estimator = state["estimator"]
        self.decision_sigmas = state["decision_sigmas"]
        self.twin_grid = checked_grid(state.get("twin_grid", GRID))
        self.conditional_every = state.get("conditional_every", 0)

    def forward(self, x: Tensor, seed: int | None = None) -> Tensor:
        """Scores (..., n_L) of the outputs for brightnesses (..., I)."""
        scores = readout(self._activities(x, seed, outputs_only=True)[-1], self.readout)
        return scores.to(x.dtype) if x.is_floating_point() else scores

    def activities(self, x: Tensor, seed: int | None = None) -> tuple[Tensor, ...]:
        """Activities of every simulated layer, (..., n_l) for l = 1..L, in x's float dtype
        (float32 for others), by ``estimator``: the Monte Carlo's are differentiable when
        grad is enabled, and ``last_stderr`` then holds their standard errors by layer (None
        for the mean field or an empty batch)."""
        return self._activities(x, seed, outputs_only=False)

    def _activities(self, x: Tensor, seed: int | None, outputs_only: bool) -> tuple[Tensor, ...]:
        """:meth:`activities`; with ``outputs_only`` the Monte Carlo differentiates the
        outputs alone (the hidden layers' activities come detached)."""
        x = checked_brightness(x, self.sizes[0])
        batch_shape = x.shape[:-1]
        flat = x.reshape(-1, self.sizes[0])
        n = sum(self.sizes[1:])
        stderr = self.last_sweeps = None
        couplings = self._couplings(flat)  # bad couplings are refused, even with no input
        if flat.shape[0] == 0:
            activity = flat.new_empty(0, n)
        elif self.estimator == "mean_field":
            activity = self._mean_field(flat, *couplings)
        elif self.estimator == "twin":
            activity = self._twin(flat, *couplings)
        else:
            activity, stderr, sweeps = self._monte_carlo(flat, *couplings, seed, outputs_only)
            self.last_sweeps = sweeps.reshape(batch_shape)

        def by_layer(t: Tensor) -> tuple[Tensor, ...]:
            return tuple(
                t[:, start:stop].reshape(*batch_shape, stop - start)
                for start, stop in layer_bounds(self.sizes)
            )

        self.last_stderr = None if stderr is None else by_layer(stderr.detach())
        layers = by_layer(activity)
        if outputs_only:  # no gradient reaches the hidden layers: say so
            layers = (*(t.detach() for t in layers[:-1]), layers[-1])
        return layers

    def _couplings(self, like: Tensor) -> tuple[list[Tensor], list[Tensor] | None]:
        """ε̂ and η̂ in ``like``'s dtype, ValueError unless finite and ≥ 0; a convolutional
        first layer's kernels as its dense couplings."""
        groups = {"excite": self.excite, "inhibit": self.inhibit}
        checked: dict[str, list[Tensor] | None] = {}
        for name, weights in groups.items():
            if weights is None:
                checked[name] = None
                continue
            for layer, weight in enumerate(weights):
                if not torch.isfinite(weight).all() or (weight < 0).any():
                    raise ValueError(
                        f"{name}[{layer}] must be finite and >= 0, got min "
                        f"{weight.min().item():.4g} (after an optimiser step, call "
                        "project_weights_())"
                    )
            checked[name] = [w.to(like) for w in weights]
            if self.conv is not None:
                checked[name][0] = conv_couplings(checked[name][0], self.conv, self.conv_pixels)
        for name in ("coupling_scale", "inhibition_scale"):
            value = getattr(self, name)
            if not torch.isfinite(value).all() or (value < 0).any():
                raise ValueError(f"{name} must be a finite number >= 0, got {value.tolist()!r}")
        return checked["excite"], checked["inhibit"]

    def _monte_carlo(
        self,
        x: Tensor,
        excite: list[Tensor],
        inhibit: list[Tensor] | None,
        seed: int | None,
        outputs_only: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Activities (B, N) of all simulated neurons for brightnesses (B, I), their
        standard errors (float64; +inf for stuck chains) and each input's sweeps (B,);
        with ``outputs_only`` and a hidden layer, only the outputs' are differentiable."""
        config = dataclasses.replace(
            self.config,
            device=x.device,
            dtype=x.dtype,
            seed=self.config.seed if seed is None else seed,
        )
        with torch.autocast(x.device.type, enabled=False):
            drive, inhibition, links, mutual = mlp_fields(
                x, excite, inhibit, self.coupling_scale.to(x), self.inhibition_scale.to(x)
            )
        fields = {"coupling_scale": (drive, links), "inhibition_scale": (inhibition, mutual)}
        for name, tensors in fields.items():
            if not all(t is None or torch.isfinite(t).all() for t in tensors):
                raise ValueError(
                    f"{name}={getattr(self, name).item():g} overflows the fields in {x.dtype}: "
                    "lower it"
                )
        batch, n = drive.shape
        hidden = len(self.sizes) > 2
        network = CompiledNetwork(
            names=self.names,
            order=self.names,
            batch_shape=torch.Size([batch]),
            color_bounds=layer_bounds(self.sizes),
            profile=self.spike_profile.to(x),
            activity_norm=self.activity_norm,
            drive=drive,
            input_inhibition=inhibition,
            excite=links.expand(batch, n, n) if hidden else None,
            inhibit=mutual.expand(batch, n, n) if hidden and mutual is not None else None,
            link_entries=self.link_entries if hidden else None,
        )
        parameters = network.parameters()
        gradients = wanted_gradients(parameters)
        stop_when = None
        check_decision(self.decision_sigmas, self.sizes[-1], self.config, gradients=bool(gradients))
        if self.decision_sigmas > 0:
            outputs = slice(n - self.sizes[-1], n)
            sigmas = self.decision_sigmas

            def stop_when(activity: Tensor, stderr: Tensor, chain_activity: Tensor) -> Tensor:
                return decided(chain_activity[..., outputs], stderr[..., outputs], sigmas)

        every = self.conditional_every
        observed = (n - self.sizes[-1], n) if outputs_only and hidden else (0, n)
        sampled = run_sampler(
            network,
            config,
            gradients=gradients,
            stop_when=stop_when,
            conditional_color=-1 if every else None,
            conditional_every=max(every, 1),
            jacobian_neurons=observed if hidden else None,
        )
        start, stop = observed
        differentiable = attach_jacobian(
            sampled.activity[:, start:stop],
            sampled.jacobians,
            parameters,
            names=network.order,
            what="QuantumMLP couplings and input",
        )
        activity = torch.cat([sampled.activity[:, :start], differentiable], dim=-1)
        return activity.to(x.dtype), sampled.stderr, sampled.sweeps

    def _mean_field(self, x: Tensor, excite: list[Tensor], inhibit: list[Tensor] | None) -> Tensor:
        """Mean-field activities (B, N) for brightnesses (B, I), in x's dtype and device."""
        if torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            raise ValueError(
                "estimator='mean_field' is not differentiable: evaluate it under "
                "torch.no_grad(), or train with estimator='monte_carlo'"
            )
        c = self.config
        result = mean_field_activities(
            x,
            excite,
            inhibit,
            float(self.coupling_scale),
            float(self.inhibition_scale),
            n_time=c.n_time,
            time_extent=c.time_extent,
            lam=c.lam,
            n_kinks=c.n_kinks,
        )
        return torch.cat(result.activities, dim=-1).to(x)

    def _twin(self, x: Tensor, excite: list[Tensor], inhibit: list[Tensor] | None) -> Tensor:
        """Twin activities (B, N) for brightnesses (B, I), differentiable by autograd."""
        if len(self.sizes) != 3:
            raise ValueError(
                f"estimator='twin' needs exactly one hidden layer, got sizes={self.sizes}"
            )
        if inhibit is not None and bool(inhibit[1].ne(0).any()):
            raise ValueError(
                "estimator='twin' has no hidden-output inhibition: inhibit[1] must be 0"
            )
        c = self.config
        tables = twin_tables(c.n_time, c.time_extent, c.lam, c.n_kinks, self.twin_grid)
        k, k_eta = self.coupling_scale.to(x), self.inhibition_scale.to(x)
        inputs_inhibit = torch.zeros_like(excite[0]) if inhibit is None else k_eta * inhibit[0]
        drive, inhibition = input_fields(x, k * excite[0].t(), inputs_inhibit.t())
        hidden, output, change = twin_activities(
            tables, drive, inhibition, k * excite[1], TWIN_ITERATIONS
        )
        if change > TWIN_TOLERANCE:
            warnings.warn(
                f"twin not settled after {TWIN_ITERATIONS} iterations: output activities "
                f"still move by {change.item():.3g} > {TWIN_TOLERANCE:g}",
                MeanFieldWarning,
                stacklevel=3,
            )
        return torch.cat([hidden, output], dim=-1)

    @torch.no_grad()
    def bound_to_twin_(self) -> QuantumMLP:
        """Scale down, in place, each group of couplings whose sum could take some input in
        [0, 1] beyond the twin's tables (:func:`~qnn_torch.functional.twin.coupling_limits`:
        a hidden neuron's input excitations and inhibitions, its links to the outputs, an
        output's links from the hidden layer); returns self. One hidden layer only."""
        c = self.config
        limits = coupling_limits(
            twin_tables(c.n_time, c.time_extent, c.lam, c.n_kinks, self.twin_grid)
        )
        k, k_eta = float(self.coupling_scale), float(self.inhibition_scale)
        inputs = tuple(range(1, self.excite[0].ndim))  # a neuron's row, or a channel's kernel
        groups = [
            (self.excite[0], inputs, limits["drive"] / k),
            (self.excite[1], 0, limits["deepening"] / k),
            (self.excite[1], 1, limits["output_drive"] / k),
        ]
        if self.inhibit is not None:
            groups.append((self.inhibit[0], inputs, limits["inhibition"] / k_eta))
        for weight, dim, limit in groups:
            total = weight.sum(dim=dim, keepdim=True)
            weight.mul_((BOUND_MARGIN * limit / total.clamp_min(1e-30)).clamp(max=1.0))
        return self

    @torch.no_grad()
    def project_weights_(self) -> QuantumMLP:
        """Clamp every ε̂ and η̂ at 0 in place (projected gradient descent); returns self."""
        for weight in self.parameters():
            weight.clamp_(min=0.0)
        return self

    def extra_repr(self) -> str:
        c = self.config
        conv = "" if self.conv is None else f"conv={self.conv}, "
        return (
            f"sizes={self.sizes}, {conv}coupling_scale={float(self.coupling_scale):g}, "
            f"inhibition_scale={float(self.inhibition_scale):g}, "
            f"inhibition={self.inhibit is not None}, readout={self.readout!r}, "
            f"n_time={c.n_time}, lam={c.lam:g}, time_extent={c.time_extent:g}, "
            f"chains={c.chains}, sweeps={c.thermalization}+{c.sweeps}, "
            f"algorithm={c.algorithm!r}"
        )
