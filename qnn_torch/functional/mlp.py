"""Couplings of a layered network of quantum neurons (a quantum MLP) as network tensors.

Simulated neurons are numbered layer by layer: layer l (l = 1..L, the last one the
outputs) holds neurons off_l .. off_l + n_l − 1, N = Σ_l n_l. With brightnesses b (B, I),
couplings ε̂⁽ˡ⁾ (n_l, n_{l−1}) ≥ 0 and inhibitions η̂⁽ˡ⁾ (n_l, n_{l−1}) ≥ 0 (layer 0 the
inputs), and scales k (excitation) and k_η (inhibition):

    drive of layer 1:        α_n = k·Σ_i ε̂⁽¹⁾_ni·b_i      β_n = k_η·Σ_i η̂⁽¹⁾_ni·b_i²
    layer l−1 → layer l:     ε[m, n] = k·ε̂⁽ˡ⁾_nm          η[m, n] = η[n, m] = k_η·η̂⁽ˡ⁾_nm

(the input fields are :func:`~qnn_torch.functional.physics.input_fields`; ε and η enter
the action as in :class:`~qnn_torch.network.Network`: a·ε·φ_n²·(φ_m² − 1)² and
a·η·(φ_m² − 1)⁴·(φ_n² − 1)⁴ per slice). A neuron of layer l − 1 with activity A then
drives layer l on average like an input of brightness A, since Σ_t (φ_m² − 1)² =
A·Σ_t (ψ_t² − 1)²; but the link acts both ways: ε also deepens m's well by ε·φ_n².
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from qnn_torch.functional.physics import input_fields


def layer_bounds(sizes: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Index ranges [off_l, off_l + n_l) of the simulated layers of ``sizes`` (inputs first)."""
    bounds, start = [], 0
    for size in sizes[1:]:
        bounds.append((start, start + size))
        start += size
    return tuple(bounds)


def link_entries(sizes: Sequence[int]) -> Tensor:
    """Flat indices m·N + n (int64) of every pair (m, n) of consecutive simulated layers of
    ``sizes``, both ways: the entries of ε and η that can carry a link."""
    bounds = layer_bounds(sizes)
    n = bounds[-1][1]
    entries = []
    for (s0, s1), (d0, d1) in itertools.pairwise(bounds):
        source, target = torch.arange(s0, s1)[:, None], torch.arange(d0, d1)[None, :]
        entries += [(source * n + target).flatten(), (target * n + source).t().flatten()]
    return torch.cat(entries) if entries else torch.zeros(0, dtype=torch.int64)


def mlp_fields(
    brightness: Tensor,
    excite: Sequence[Tensor],
    inhibit: Sequence[Tensor] | None,
    coupling_scale: Tensor,
    inhibition_scale: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Input fields and link matrices of a quantum MLP (formulas in the module doc).

    Shapes: brightness (B, I); excite[l − 1] and inhibit[l − 1] (n_l, n_{l−1}) for
    l = 1..L, or inhibit None. Returns drive α (B, N), input inhibition β (B, N), ε (N, N)
    and η (N, N) or None, in brightness's dtype, differentiable with respect to every
    argument.
    """
    sizes = [brightness.shape[-1], *(w.shape[0] for w in excite)]
    bounds = layer_bounds(sizes)
    n = bounds[-1][1]
    first = bounds[0][1]
    zero_inputs = torch.zeros_like(excite[0]).t()
    drive, inhibition = input_fields(
        brightness,
        coupling_scale * excite[0].t(),
        zero_inputs if inhibit is None else inhibition_scale * inhibit[0].t(),
    )
    rest = brightness.new_zeros(brightness.shape[0], n - first)
    drive = torch.cat([drive, rest], dim=-1)
    inhibition = torch.cat([inhibition, rest], dim=-1)
    links = brightness.new_zeros(n, n)
    mutual = None if inhibit is None else brightness.new_zeros(n, n)
    for layer in range(1, len(bounds)):
        (s0, s1), (d0, d1) = bounds[layer - 1], bounds[layer]
        links[s0:s1, d0:d1] = coupling_scale * excite[layer].t()
        if mutual is not None:
            block = inhibition_scale * inhibit[layer]
            mutual[s0:s1, d0:d1] = block.t()
            mutual[d0:d1, s0:s1] = block
    return drive, inhibition, links, mutual
