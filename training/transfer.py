"""Transfer of the classical twin's weights to a layer of quantum neurons.

Two steps turn the trained weight W (10, 784) into couplings ε̂ in [0, 1]:

1. Per-pixel shift (optional, on by default): ``W' = W − min_j W_ji``. Adding the same
   constant to the ten class weights of one pixel adds the same amount to every class
   score, so softmax and argmax of the classical model are unchanged: an exact symmetry.
   The twin starts from W ≡ 1, so every class carries a large common offset (min W ≈ 0.5)
   that only saturates the quantum neurons; removing it halves the drives.
2. The paper's normalisation ``ε̂ = (W' − min W') / max(W' − min W')`` over the whole matrix.

The quantum layer then couples pixel i to output j with ``k·ε̂_ji``. The paper uses
k = 1000; after the shift, the layer's default k = 100 (``DEFAULT_COUPLING_SCALE``) is best
on MNIST: a
smaller k leaves the activities close to each other, so sampling noise decides the argmax,
and a larger k saturates the best-driven outputs (see docs/mnist.md for the curve).
"""

from __future__ import annotations

from torch import Tensor, nn

from qnn_torch.config import SamplerConfig
from qnn_torch.functional.layer import normalize_weights
from qnn_torch.module.layer import DEFAULT_COUPLING_SCALE, QuantumNeuronLayer, classical_weight


def shift_per_pixel(weight: Tensor) -> Tensor:
    """``W − min_j W_ji``: subtract from every pixel (column) its minimum over classes (rows).

    An exact symmetry of the classical scores' softmax and argmax (see the module doc); the
    result is >= 0 with a zero in every column.
    """
    weight = classical_weight(weight)
    return weight - weight.min(dim=0, keepdim=True).values


def transferred_weight(
    weight_or_linear: nn.Linear | Tensor, *, per_pixel_shift: bool = True
) -> Tensor:
    """Couplings ε̂ in [0, 1], shape (out, in): optional per-pixel shift, then normalisation."""
    weight = classical_weight(weight_or_linear)
    return normalize_weights(shift_per_pixel(weight) if per_pixel_shift else weight)


def transfer(
    weight_or_linear: nn.Linear | Tensor,
    *,
    coupling_scale: float = DEFAULT_COUPLING_SCALE,
    per_pixel_shift: bool = True,
    readout: str = "softmax",
    lateral_inhibition: float = 1e-17,
    config: SamplerConfig | None = None,
    estimator: str = "monte_carlo",
) -> QuantumNeuronLayer:
    """The quantum layer of a trained classical weight (an nn.Linear or its weight (out, in))."""
    weight = classical_weight(weight_or_linear)
    return QuantumNeuronLayer.from_classical(
        shift_per_pixel(weight) if per_pixel_shift else weight,
        coupling_scale=coupling_scale,
        lateral_inhibition=lateral_inhibition,
        readout=readout,
        config=config,
        estimator=estimator,
    )
