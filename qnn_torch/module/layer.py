"""QuantumNeuronLayer: a drop-in nn.Module whose forward pass is the path-integral sampler."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from qnn_torch.autograd import attach_jacobian
from qnn_torch.config import SamplerConfig, check_choice, check_number
from qnn_torch.decision import sequential_top
from qnn_torch.functional.activity_table import activity_table
from qnn_torch.functional.layer import (
    READOUTS,
    check_decision,
    checked_brightness,
    checked_sigmas,
    decided,
    normalize_weights,
    output_drives,
    readout,
)
from qnn_torch.functional.physics import input_spike
from qnn_torch.network import independent_outputs
from qnn_torch.simulate import run_sampler

# Skip lateral inhibition when its largest possible change of a path's action,
# T·η·max(φ²−1)⁸·pairs over |φ| ≤ 2, is below this: expectations then move by less than
# this relative amount, far under any Monte Carlo error (and float32's resolution).
NEGLIGIBLE_ACTION = 1e-9
_INHIBITION_BOUND = 3.0**8  # max (φ² − 1)⁸ for |φ| ≤ 2; paths practically never leave it
ESTIMATORS = ("monte_carlo", "exact")
# k·ε̂ with ε̂ ∈ [0, 1]: a typical MNIST digit (Σ_i b_i ≈ 100) then drives its outputs to
# ~10³–10⁴, the range validated against the exact reference (the paper's k = 1000 drives
# them ten times beyond it, where every output saturates).
DEFAULT_COUPLING_SCALE = 100.0


_EXACT_NEEDS_INDEPENDENT = (
    "estimator='exact' needs independent outputs, but lateral_inhibition={:g} is large "
    "enough to be simulated: use estimator='monte_carlo'"
)


def classical_weight(weight_or_linear: nn.Linear | Tensor) -> Tensor:
    """The detached (out, in) weight of an nn.Linear, or a 2-D tensor as it is; finite."""
    weight = (
        weight_or_linear.weight if isinstance(weight_or_linear, nn.Linear) else weight_or_linear
    )
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(
            "weight_or_linear must be an nn.Linear or a 2-D tensor (out, in), "
            f"got {type(weight_or_linear).__name__}"
        )
    if not torch.isfinite(weight).all():
        raise ValueError("weight_or_linear has non-finite weights")
    return weight.detach()


class QuantumNeuronLayer(nn.Module):
    """A layer of quantum neurons driven by fixed inputs (the paper's digit classifier).

    Input i of brightness b_i becomes an input neuron with the grey path ψ̂_{b_i}; output j
    is excited by it with strength k·ε̂_ji (k = ``coupling_scale``, ε̂ = ``weight`` in
    [0, 1]); outputs inhibit each other with ``lateral_inhibition``. Since every input
    shares one kink path, the drive on output j is k·(b·ε̂ᵀ)_j·(ψ_t² − 1)², so the forward
    pass is a matrix product followed by the Metropolis sampler on the outputs alone.

    ``forward`` maps brightnesses (..., in_features) in [0, 1] to scores
    (..., out_features) on the input's device and dtype (float16/bfloat16 inputs are
    simulated in float32). ``readout``: ``"activity"`` (raw activities), ``"softmax"``
    (the paper's) or ``"born"`` (a_j² / Σ_k a_k²). The sampler's seed is fixed by
    ``config``, so the same batch gives the same output; an image's scores depend on the
    random numbers of the batch it is simulated in (``training.quantum_loader`` fixes the
    batches for reproducible evaluation).

    The paper's lateral inhibition 1e-17 changes a path's action by at most ~1e-12, so
    the layer skips inhibition below ``NEGLIGIBLE_ACTION`` (see ``simulates_inhibition``)
    and then samples the outputs as independent neurons, which share their random numbers
    (common random numbers: each output's chain is exact, and outputs with close drives
    move together; see :mod:`qnn_torch.functional.sampler`); larger values are simulated.

    ``estimator``: ``"monte_carlo"`` (the sampler, the default) or ``"exact"``, the
    infinite-statistics limit of the same layer for independent outputs: each activity is
    the transfer-matrix value A(α_j), tabulated once per lattice and interpolated (see
    :mod:`qnn_torch.functional.activity_table`; error ≤ 1e-4), deterministic and instant.

    The layer is differentiable with respect to ``weight`` and its input: the sampler also
    measures ∂A_j/∂α_k = −Cov(O_j, ∂S/∂α_k) of each activity with respect to each drive
    α_k (diagonal for independent outputs, the full output Jacobian when inhibition is
    simulated), at no extra sweep and with the same activities as without gradients; the
    exact estimator differentiates its interpolant. Couplings must stay ≥ 0: after each
    optimiser step call :meth:`project_weights_` (projected gradient descent onto ε̂ ≥ 0;
    ``training.QuantumClassifier`` does).

    Decision mode (``decision_sigmas`` > 0, for classification): each input is measured
    until its top output is ahead of every other by ``decision_sigmas`` standard errors of
    their chain-by-chain margin (:func:`~qnn_torch.functional.layer.contested`), or up to
    ``config.max_sweeps``. With independent outputs (inhibition skipped) this is
    :func:`~qnn_torch.decision.sequential_top`: after a first block of ``config.sweeps``
    only the outputs still contested are sampled further, in phases of doubling length;
    with simulated inhibition every output is sampled, in blocks, until the input is
    decided. Inputs that are done stop costing anything. ``last_sweeps`` holds the
    measurement sweeps each input of the last Monte Carlo forward used (None after an
    exact one). Outputs left behind are measured over fewer sweeps (and stopped when they
    looked low), so their activities are for ranking, not for precision. The
    data-dependent stopping would bias gradients, so decision mode runs only without them
    (``torch.no_grad()``, evaluation loops).

    ``config`` may be reassigned (the derived spike profile and normalisation follow it),
    and it is saved in the ``state_dict`` (extra state), so a loaded layer simulates the
    lattice it was saved with.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        coupling_scale: float = DEFAULT_COUPLING_SCALE,
        lateral_inhibition: float = 1e-17,
        readout: str = "softmax",
        config: SamplerConfig | None = None,
        estimator: str = "monte_carlo",
        decision_sigmas: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_number("coupling_scale", coupling_scale)
        check_number("lateral_inhibition", lateral_inhibition)
        self.in_features = in_features
        self.out_features = out_features
        self.readout = readout
        self.estimator = estimator
        self.decision_sigmas = decision_sigmas
        self.last_sweeps: Tensor | None = None
        self.weight = nn.Parameter(torch.rand(out_features, in_features))
        self.register_buffer("coupling_scale", torch.tensor(float(coupling_scale)))
        self.register_buffer("lateral_inhibition", torch.tensor(float(lateral_inhibition)))
        self._checked_buffers()
        # Derived from the config: moves with .to(), rebuilt (not loaded) with the config.
        self.register_buffer("spike_profile", torch.empty(0), persistent=False)
        self.config = SamplerConfig() if config is None else config
        if self.estimator == "exact" and self.simulates_inhibition:
            raise ValueError(_EXACT_NEEDS_INDEPENDENT.format(float(lateral_inhibition)))
        self._check_decision()

    def _check_decision(self) -> None:
        """Decision mode needs room to measure more: ``config.max_sweeps`` > ``sweeps``."""
        check_decision(self.decision_sigmas, self.out_features, self.config)

    @property
    def readout(self) -> str:
        """``"softmax"``, ``"activity"`` or ``"born"`` (see the class doc); may be reassigned."""
        return self._readout

    @readout.setter
    def readout(self, readout: str) -> None:
        self._readout = check_choice("readout", readout, READOUTS)

    @property
    def estimator(self) -> str:
        """``"monte_carlo"`` or ``"exact"`` (see the class doc); may be reassigned."""
        return self._estimator

    @estimator.setter
    def estimator(self, estimator: str) -> None:
        self._estimator = check_choice("estimator", estimator, ESTIMATORS)

    @property
    def decision_sigmas(self) -> float:
        """Decision mode's margin in standard errors (0: off; see the class doc)."""
        return self._decision_sigmas

    @decision_sigmas.setter
    def decision_sigmas(self, sigmas: float) -> None:
        self._decision_sigmas = checked_sigmas(sigmas)

    @property
    def config(self) -> SamplerConfig:
        """The sampler settings; assigning new ones rebuilds the derived lattice buffers."""
        return self._config

    @config.setter
    def config(self, config: SamplerConfig) -> None:
        if not isinstance(config, SamplerConfig):
            raise ValueError(f"config must be a SamplerConfig, got {type(config).__name__}")
        profile, self.activity_norm = input_spike(
            config.n_time, config.time_extent, config.lam, config.n_kinks
        )
        self._config = config
        self.spike_profile = profile.to(self.weight.device)

    def get_extra_state(self) -> dict[str, object]:
        """Everything but the tensors that defines the output: the config, ``readout``,
        ``estimator`` and ``decision_sigmas``, as plain values (``weights_only`` loads)."""
        return {
            "config": self.config.as_state(),
            "readout": self.readout,
            "estimator": self.estimator,
            "decision_sigmas": self.decision_sigmas,
        }

    def set_extra_state(self, state: dict[str, object]) -> None:
        """Restore the settings of :meth:`get_extra_state`, each validated as when set.

        A state saved before readout, estimator and decision_sigmas were saved keeps the
        layer's own.
        """
        self.config = SamplerConfig.from_state(state["config"])
        self.readout = state.get("readout", self.readout)
        self.estimator = state.get("estimator", self.estimator)
        self.decision_sigmas = state.get("decision_sigmas", self.decision_sigmas)
        if self.estimator == "exact" and self.simulates_inhibition:
            raise ValueError(_EXACT_NEEDS_INDEPENDENT.format(float(self.lateral_inhibition)))
        self._check_decision()

    @classmethod
    def from_classical(
        cls, weight_or_linear: nn.Linear | Tensor, **kwargs: object
    ) -> QuantumNeuronLayer:
        """A layer whose couplings are the normalised classical weight (W − min W)/max(…).

        Takes an nn.Linear or a tensor shaped like nn.Linear.weight (out, in); keyword
        arguments go to the constructor.
        """
        weight = classical_weight(weight_or_linear)
        layer = cls(weight.shape[1], weight.shape[0], **kwargs)
        with torch.no_grad():
            layer.weight.copy_(normalize_weights(weight.to(layer.weight)))
        return layer

    @property
    def simulates_inhibition(self) -> bool:
        """Whether the lateral inhibition is large enough to be simulated (see class doc)."""
        pairs = self.out_features * (self.out_features - 1) / 2
        bound = self.config.time_extent * float(self.lateral_inhibition) * _INHIBITION_BOUND * pairs
        return bound >= NEGLIGIBLE_ACTION

    def drives(self, x: Tensor) -> Tensor:
        """Validated drive amplitudes k·(b·ε̂ᵀ) of shape (..., out_features), float32/64."""
        x = checked_brightness(x, self.in_features)
        coupling_scale, _ = self._checked_buffers()
        weight = self.weight.to(x)
        if not torch.isfinite(weight).all() or (weight < 0).any():
            raise ValueError(
                f"weight must be finite and >= 0 (couplings ε̂), got min {weight.min().item():.4g}"
                " (after an optimiser step, call project_weights_())"
            )
        # In x's dtype even under autocast (mixed precision): the sampler runs in float32/64.
        with torch.autocast(x.device.type, enabled=False):
            drive = output_drives(x, weight, coupling_scale.to(x))
        if not torch.isfinite(drive).all():
            raise ValueError(
                f"coupling_scale={coupling_scale.item():g} overflows the drives in {x.dtype}: "
                "lower it"
            )
        return drive

    def _checked_buffers(self) -> tuple[Tensor, Tensor]:
        """``coupling_scale`` and ``lateral_inhibition`` as stored, ValueError unless finite ≥ 0.

        Checked where forward uses them, so values loaded by ``load_state_dict``, or that
        overflow float32 when stored, are refused too.
        """
        for name in ("coupling_scale", "lateral_inhibition"):
            value = getattr(self, name)
            if value.numel() != 1 or not torch.isfinite(value).all() or (value < 0).any():
                raise ValueError(
                    f"{name} must be a finite number >= 0 (as stored, {value.dtype}), "
                    f"got {value.tolist()!r}"
                )
        return self.coupling_scale, self.lateral_inhibition

    @torch.no_grad()
    def project_weights_(self, max_total: float | None = None) -> QuantumNeuronLayer:
        """Project ``weight`` onto the couplings' feasible set ε̂ ≥ 0, in place.

        Called after each optimiser step this is projected gradient descent: excitation
        strengths cannot turn negative, and weights that stay positive move as the
        optimiser says. With ``max_total`` the clamped couplings are then rescaled, all by
        the same factor min(1, max_total/Σ ε̂) (not the Euclidean projection onto
        Σ ε̂ ≤ max_total, which would shift them): their pattern is kept, their overall
        strength, hence the drives, bounded. Returns the layer.
        """
        if max_total is not None and not (math.isfinite(max_total) and max_total > 0):
            raise ValueError(f"max_total must be a finite number > 0 or None, got {max_total!r}")
        self.weight.clamp_(min=0.0)
        if max_total is not None:  # on the device: no host sync per step
            self.weight.mul_((max_total / self.weight.sum()).clamp(max=1.0))
        return self

    def forward(self, x: Tensor, seed: int | None = None) -> Tensor:
        """Scores (..., out_features) of brightnesses (..., in_features).

        ``seed`` replaces ``config.seed`` for this call (e.g. a different one per training
        step). Differentiable with respect to ``weight`` and ``x`` when grad is enabled.
        """
        drive = self.drives(x)
        batch_shape, out = drive.shape[:-1], self.out_features
        flat = drive.reshape(-1, out)
        self.last_sweeps = None
        if flat.shape[0] == 0:
            return drive.new_empty(drive.shape).to(
                x.dtype if x.is_floating_point() else drive.dtype
            )
        if self.estimator == "exact":
            activity = self._exact_activity(flat)
        else:
            activity, sweeps = self._monte_carlo_activity(flat, seed)
            self.last_sweeps = sweeps.reshape(batch_shape)
        scores = readout(activity.reshape(*batch_shape, out), self.readout)
        return scores.to(x.dtype) if x.is_floating_point() else scores

    def _monte_carlo_activity(self, drive: Tensor, seed: int | None) -> tuple[Tensor, Tensor]:
        """The sampler's activities (B, O) of drives (B, O), in their dtype, differentiable
        with respect to them when grad is enabled, and each input's measurement sweeps."""
        out = self.out_features
        config = dataclasses.replace(
            self.config,
            device=drive.device,
            dtype=drive.dtype,
            seed=self.config.seed if seed is None else seed,
        )
        inhibit = None
        if self.simulates_inhibition:
            matrix = self.lateral_inhibition.to(drive) * (
                1 - torch.eye(out, device=drive.device, dtype=drive.dtype)
            )
            inhibit = matrix.expand(drive.shape[0], out, out)
        profile = self.spike_profile.to(drive)
        gradients = ("drive",) if torch.is_grad_enabled() and drive.requires_grad else ()
        stop_when = None
        if self.decision_sigmas > 0:
            check_decision(
                self.decision_sigmas, self.out_features, self.config, gradients=bool(gradients)
            )
            sigmas = self.decision_sigmas
            if inhibit is None:  # independent outputs: sample only the contenders
                decision = sequential_top(drive, profile, self.activity_norm, config, sigmas)
                return decision.activity.to(drive.dtype), decision.sweeps

            def stop_when(activity: Tensor, stderr: Tensor, chain_activity: Tensor) -> Tensor:
                return decided(chain_activity, stderr, sigmas)

        network = independent_outputs(drive, profile, self.activity_norm, inhibit)
        sampled = run_sampler(network, config, gradients=gradients, stop_when=stop_when)
        activity = attach_jacobian(
            sampled.activity,
            sampled.jacobians,
            {"drive": drive},
            names=network.order,
            what="QuantumNeuronLayer drives, from its weight and input",
        )
        return activity.to(drive.dtype), sampled.sweeps

    def exact_activity(self, x: Tensor) -> Tensor:
        """The exact estimator's activities (..., out_features) of inputs (..., in_features),
        whatever ``estimator`` is set to (e.g. to compare it with the Monte Carlo)."""
        return self._exact_activity(self.drives(x))

    def _exact_activity(self, drive: Tensor) -> Tensor:
        """A(α) of drives (B, O) from the transfer-matrix table (independent outputs only)."""
        if self.simulates_inhibition:
            raise ValueError(_EXACT_NEEDS_INDEPENDENT.format(float(self.lateral_inhibition)))
        c = self.config
        # The range holds every drive any input in [0, 1] can give, so it does not depend on
        # the batch (nor, under DDP, on the process).
        bound = float(self.coupling_scale) * float(self.weight.detach().sum(-1).max())
        table = activity_table(c.n_time, c.time_extent, c.lam, c.n_kinks, max_drive=bound)
        return table(drive)

    def extra_repr(self) -> str:
        c = self.config
        inhibition = "" if self.simulates_inhibition else " (negligible: skipped)"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"coupling_scale={float(self.coupling_scale):g}, "
            f"lateral_inhibition={float(self.lateral_inhibition):g}{inhibition}, "
            f"readout={self.readout!r}, estimator={self.estimator!r}, "
            f"n_time={c.n_time}, lam={c.lam:g}, "
            f"time_extent={c.time_extent:g}, chains={c.chains}, "
            f"sweeps={c.thermalization}+{c.sweeps}, algorithm={c.algorithm!r}"
        )
