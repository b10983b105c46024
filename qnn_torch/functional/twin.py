"""The profile-table twin of a quantum MLP with one hidden layer: fast, differentiable, exact
tables of single neurons combined self-consistently.

It is the time-resolved mean field (:mod:`qnn_torch.functional.mean_field`) with every
time profile reduced to a few coefficients, so that a neuron's response is a table lookup.
Hidden neuron n feels the input fields α_n·g_t and β_n·g_t² and the deepening
K_{n,t} = Σ_j ε_nj·⟨φ_{j,t}²⟩ from the outputs j it excites; output j feels the drive
D_{j,t} = Σ_n ε_nj·⟨w_{n,t}⟩, w = (φ² − 1)². Profiles are expanded in orthonormal bases
(the leading right singular vectors of a family of exact single-neuron profiles):

    ⟨w_{n,t}⟩ ≈ Σ_c e_nc·E_c,t  (3 terms)        ⟨φ_{j,t}²⟩ ≈ Σ_c ξ_jc·X_c,t  (2 terms)

so the couplings act on coefficients, d_j = Σ_n ε_nj·e_n and κ_n = Σ_j ε_nj·ξ_j, and

    hidden:  (A_n, e_n) = H(α_n, β_n, κ_n1, κ_n2/κ_n1)     from U_t = V0 + α·g_t·φ² +
                                                            β·g_t²·(φ² − 1)⁴ + K_t·(φ² − 1)²
    output:  (A_j, ξ_j) = O(d_j1, d_j2/d_j1, d_j3/d_j1)    from U_t = V0 + D_t·φ²

H and O are exact (:func:`~qnn_torch.functional.exact.neuron_moments`) at the nodes of a
grid (log-spaced magnitudes, linear ratios) and interpolated multilinearly; the layers are
iterated from outputs at rest (φ² = 1). Left out: correlations between neighbours'
fluctuations (as in the mean field), the profiles' higher terms, and interpolation error;
``error_bound`` is the tables' largest measured error in an activity, at random points
between the nodes.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import sys
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from qnn_torch.cache import load_or_build, source_digest
from qnn_torch.config import check_int
from qnn_torch.functional import exact, physics
from qnn_torch.functional.exact import neuron_moments
from qnn_torch.functional.physics import input_spike, validate_kinks, validate_lattice

_DTYPE = torch.float64
EMISSION_TERMS = 3
DEEPENING_TERMS = 2
# Magnitude axes u = log(1 + v/(s·Λ)) / log(1 + v_max/(s·Λ)), as in the activity table.
_SCALE_PER_LAM = 0.2
RANGES = {"drive": 32.0, "inhibition": 16.0, "deepening": 16.0, "output_drive": 32.0}
"""v_max/Λ of the tables' magnitude axes: the drive α, the input inhibition β, the deepening
κ₁ and the output drive d₁."""
_RATIO_MARGIN = 0.1
_CHECKS = 48
_CHECK_SEED = 0
GRID = (29, 7, 11, 5, 41, 11, 9)
"""Default nodes per axis: drive, inhibition, deepening, deepening ratio (hidden table);
output drive and its two ratios (output table)."""


@dataclass(frozen=True)
class TwinTables:
    """Tables of the twin (module doc) for one lattice, float64 CPU.

    ``hidden`` (n_α, n_β, n_κ, n_ρ, 1 + 3): activity and emission coefficients;
    ``output`` (n_d, n_r2, n_r3, 1 + 2): activity and φ² coefficients; ``emission_basis``
    (3, Nt) and ``deepening_basis`` (2, Nt); ``rest`` (2,) the coefficients of φ² = 1;
    ``ratio_bounds`` (3, 2) the [low, high] of the deepening ratio and the two output-drive
    ratios; ``lam`` Λ; ``error_bound`` the largest measured activity error.
    """

    hidden: Tensor
    output: Tensor
    emission_basis: Tensor
    deepening_basis: Tensor
    rest: Tensor
    ratio_bounds: Tensor
    lam: float
    error_bound: float


def coupling_limits(tables: TwinTables) -> dict[str, float]:
    """Largest sums of scaled couplings that keep every input b ∈ [0, 1]ᴵ in the tables:

        Σ_i k·ε̂⁽¹⁾_ni ≤ drive,  Σ_i k_η·η̂⁽¹⁾_ni ≤ inhibition       (each hidden n)
        Σ_j k·ε̂⁽²⁾_jn ≤ deepening,  Σ_n k·ε̂⁽²⁾_jn ≤ output_drive   (each hidden n, output j)

    (α ≤ Σ_i k·ε̂_ni since b ≤ 1; κ₁ ≤ max ξ₁·Σ_j ε_jn and d₁ ≤ max e₁·Σ_n ε_jn over the
    tables' coefficients and the outputs at rest.)"""
    lam = tables.lam
    largest_xi = max(tables.output[..., 1].amax().item(), tables.rest[0].item())
    return {
        "drive": RANGES["drive"] * lam,
        "inhibition": RANGES["inhibition"] * lam,
        "deepening": RANGES["deepening"] * lam / largest_xi,
        "output_drive": RANGES["output_drive"] * lam / tables.hidden[..., 1].amax().item(),
    }


def _magnitude_fraction(value: Tensor, name: str, lam: float) -> Tensor:
    """u ∈ [0, 1] of a magnitude axis; ValueError naming the field beyond its range."""
    scale, top = _SCALE_PER_LAM * lam, RANGES[name] * lam
    bad = ~torch.isfinite(value) | (value < 0) | (value > top * (1 + 1e-9))
    if bad.any():
        found = value.detach()[bad].flatten()[0].item()
        raise ValueError(
            f"the twin's {name} must lie in [0, {top:.4g}] (its table's range, "
            f"{RANGES[name]:g}·Λ), got {found:.4g}: lower the couplings"
        )
    return torch.log1p(value / scale) / math.log1p(top / scale)


def _magnitudes(name: str, lam: float, fraction: Tensor) -> Tensor:
    """The values of a magnitude axis at fractions u ∈ [0, 1] (inverse of
    :func:`_magnitude_fraction`)."""
    scale, top = _SCALE_PER_LAM * lam, RANGES[name] * lam
    return scale * torch.expm1(fraction * math.log1p(top / scale))


def _magnitude_nodes(name: str, lam: float, n: int) -> Tensor:
    """The n values of a magnitude axis at u = 0, 1/(n − 1), ..., 1."""
    return _magnitudes(name, lam, torch.linspace(0.0, 1.0, n, dtype=_DTYPE))


def interpolate(table: Tensor, fractions: Tensor) -> Tensor:
    """Multilinear interpolation of ``table`` (n_1, ..., n_D, C) at ``fractions`` (..., D)
    in [0, 1] (clamped), node i of axis d at i/(n_d − 1). Returns (..., C), differentiable
    with respect to the fractions (not the table)."""
    dims = table.shape[:-1]
    flat = table.reshape(-1, table.shape[-1]).to(fractions)
    position = fractions.clamp(0.0, 1.0) * fractions.new_tensor([n - 1 for n in dims])
    lower = position.detach().floor().clamp(max=fractions.new_tensor([n - 2 for n in dims]))
    lower = lower.clamp(min=0.0)
    weight_upper = position - lower
    lower = lower.long()
    strides = [math.prod(dims[d + 1 :]) for d in range(len(dims))]
    result = 0.0
    for corner in itertools.product((0, 1), repeat=len(dims)):
        index = sum((lower[..., d] + c) * strides[d] for d, c in enumerate(corner))
        weight = math.prod(
            weight_upper[..., d] if c else 1.0 - weight_upper[..., d] for d, c in enumerate(corner)
        )
        result = result + weight[..., None] * flat[index]
    return result


def _ratio_fraction(ratio: Tensor, bounds: Tensor) -> Tensor:
    """(ratio − low)/(high − low) for ratios (..., R) and bounds (R, 2)."""
    low, high = bounds[:, 0].to(ratio), bounds[:, 1].to(ratio)
    return (ratio - low) / (high - low)


def _safe_ratios(coefficients: Tensor, default: Tensor) -> tuple[Tensor, Tensor]:
    """(c_0, c_{1:}/c_0) of coefficients (..., C), with ``default`` (C − 1,) where c_0 = 0."""
    lead = coefficients[..., 0]
    positive = lead > 0
    safe = torch.where(positive, lead, torch.ones_like(lead))
    ratios = coefficients[..., 1:] / safe[..., None]
    return lead, torch.where(positive[..., None], ratios, default.to(ratios))


def hidden_response(
    tables: TwinTables, drive: Tensor, inhibition: Tensor, deepening: Tensor
) -> Tensor:
    """H: (activity, emission coefficients) (..., 4) of hidden neurons with input drive α
    (...), input inhibition β (...) and deepening coefficients κ (..., 2)."""
    lam = tables.lam
    lead, ratio = _safe_ratios(deepening, tables.rest[1:] / tables.rest[0])
    fractions = torch.stack(
        [
            _magnitude_fraction(drive, "drive", lam),
            _magnitude_fraction(inhibition, "inhibition", lam),
            _magnitude_fraction(lead, "deepening", lam),
            _ratio_fraction(ratio, tables.ratio_bounds[:1])[..., 0],
        ],
        dim=-1,
    )
    return interpolate(tables.hidden, fractions)


def output_response(tables: TwinTables, drive: Tensor) -> Tensor:
    """O: (activity, φ² coefficients) (..., 3) of outputs with drive coefficients d (..., 3)."""
    middle = tables.ratio_bounds[1:].mean(dim=-1)
    lead, ratio = _safe_ratios(drive, middle)
    fractions = torch.cat(
        [
            _magnitude_fraction(lead, "output_drive", tables.lam)[..., None],
            _ratio_fraction(ratio, tables.ratio_bounds[1:]),
        ],
        dim=-1,
    )
    return interpolate(tables.output, fractions)


def twin_activities(
    tables: TwinTables,
    drive: Tensor,
    inhibition: Tensor,
    links: Tensor,
    iterations: int = 4,
) -> tuple[Tensor, Tensor, Tensor]:
    """Self-consistent twin activities of a one-hidden-layer quantum MLP (module doc).

    drive α and inhibition β (B, H) of the hidden neurons from the inputs; links ε (O, H)
    from hidden to outputs (scaled). ``iterations`` rounds of hidden then outputs, from
    outputs at rest. Returns hidden activities (B, H), output activities (B, O) and the
    largest change of an output activity in the last round (a 0-d tensor), all
    differentiable in the inputs' dtype.
    """
    check_int("iterations", iterations, 1)
    basis_rest = tables.rest.to(drive)
    xi = basis_rest.expand(*drive.shape[:-1], links.shape[0], DEEPENING_TERMS)
    change = drive.new_tensor(float("inf"))
    previous = None
    for _ in range(iterations):
        deepening = torch.einsum("...jc,jn->...nc", xi, links)
        hidden = hidden_response(tables, drive, inhibition, deepening)
        output = output_response(tables, torch.einsum("...nc,jn->...jc", hidden[..., 1:], links))
        xi = output[..., 1:]
        if previous is not None:
            change = (output[..., 0] - previous).detach().abs().amax()
        previous = output[..., 0]
    return hidden[..., 0], output[..., 0], change


def _moments(
    drive: Tensor,
    inhibition: Tensor | None,
    deepening: Tensor | None,
    lattice: tuple,
    chunks: int = 1,
    progress: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Activity (P,), ⟨w_t⟩ and ⟨φ_t²⟩ (P, Nt) of one neuron in fields (P, Nt) (or None),
    in ``chunks`` consecutive parts, each on the φ grid its own largest fields need (a
    progress bar named ``progress``, if given)."""
    n_time, time_extent, lam, n_kinks = lattice
    norm = input_spike(n_time, time_extent, lam, n_kinks)[1]
    split = zip(
        *(
            [None] * chunks if f is None else f.tensor_split(chunks)
            for f in (drive, inhibition, deepening)
        ),
        strict=True,
    )
    parts = [
        neuron_moments(*fields, time_extent=time_extent, lam=lam)
        for fields in tqdm(split, desc=progress, total=chunks, disable=progress is None)
    ]
    v0, x = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return v0.sum(-1) / norm, v0 / (0.25 * lam), x


def _leading_basis(profiles: Tensor, terms: int) -> Tensor:
    """The ``terms`` leading right singular vectors of profiles (P, Nt), the first with a
    positive sum: (terms, Nt)."""
    basis = torch.linalg.svd(profiles, full_matrices=False)[2][:terms].clone()
    if basis[0].sum() < 0:
        basis[0] = -basis[0]
    return basis


def _bounds(coefficients: Tensor) -> Tensor:
    """[low, high] (C − 1, 2) of the ratios c_{1:}/c_0 of coefficients (P, C), widened by
    _RATIO_MARGIN of their span on each side."""
    ratios = coefficients[:, 1:] / coefficients[:, :1]
    low, high = ratios.amin(0), ratios.amax(0)
    margin = _RATIO_MARGIN * (high - low)
    return torch.stack([low - margin, high + margin], 1)


def _hidden_fields(lattice: tuple, tables_axes: tuple[Tensor, ...], basis: Tensor) -> tuple:
    """Drive, inhibition and deepening profiles (P, Nt) at every node of the hidden table."""
    g = input_spike(*lattice)[0]
    alpha, beta, kappa, rho = torch.meshgrid(*tables_axes, indexing="ij")
    deepening = kappa.reshape(-1, 1) * (basis[0] + rho.reshape(-1, 1) * basis[1])
    return (
        alpha.reshape(-1, 1) * g,
        beta.reshape(-1, 1) * g**2,
        deepening.clamp_min(0.0),
    )


def _output_fields(axes: tuple[Tensor, ...], basis: Tensor) -> Tensor:
    """Drive profiles (P, Nt) at every node of the output table."""
    d, r2, r3 = (a.reshape(-1, 1) for a in torch.meshgrid(*axes, indexing="ij"))
    return (d * (basis[0] + r2 * basis[1] + r3 * basis[2])).clamp_min(0.0)


def _build(lattice: tuple, grid: tuple[int, ...]) -> dict[str, object]:
    n_time, _, lam, _ = lattice
    g = input_spike(*lattice)[0]
    # Family for the bases: drives α·g_t and constant deepenings K, 0..8Λ and 0..2Λ.
    alpha = torch.linspace(0.0, 8.0, 17, dtype=_DTYPE) * lam
    depth = torch.linspace(0.0, 2.0, 9, dtype=_DTYPE) * lam
    a, k = (t.reshape(-1, 1) for t in torch.meshgrid(alpha, depth, indexing="ij"))
    _, w, x = _moments(a * g, None, k.expand(-1, n_time), lattice)
    emission_basis = _leading_basis(w, EMISSION_TERMS)
    deepening_basis = _leading_basis(x, DEEPENING_TERMS)
    rest = torch.ones(n_time, dtype=_DTYPE) @ deepening_basis.t()
    n_a, n_b, n_k, n_r, n_d, n_r2, n_r3 = grid
    deepening_bounds = _bounds(torch.cat([(x @ deepening_basis.t()), rest[None]]))
    hidden_axes = (
        _magnitude_nodes("drive", lam, n_a),
        _magnitude_nodes("inhibition", lam, n_b),
        _magnitude_nodes("deepening", lam, n_k),
        torch.linspace(*deepening_bounds[0].tolist(), n_r, dtype=_DTYPE),
    )
    fields = _hidden_fields(lattice, hidden_axes, deepening_basis)
    activity, w, _ = _moments(*fields, lattice, chunks=n_a, progress="twin table: hidden")
    hidden = torch.cat([activity[:, None], w @ emission_basis.t()], 1)

    output_bounds = _bounds(hidden[:, 1:])
    output_axes = (
        _magnitude_nodes("output_drive", lam, n_d),
        torch.linspace(*output_bounds[0].tolist(), n_r2, dtype=_DTYPE),
        torch.linspace(*output_bounds[1].tolist(), n_r3, dtype=_DTYPE),
    )
    fields = _output_fields(output_axes, emission_basis)
    activity, _, x = _moments(
        fields, None, None, lattice, chunks=n_d, progress="twin table: outputs"
    )
    output = torch.cat([activity[:, None], x @ deepening_basis.t()], 1)

    tables = TwinTables(
        hidden=hidden.reshape(n_a, n_b, n_k, n_r, 1 + EMISSION_TERMS),
        output=output.reshape(n_d, n_r2, n_r3, 1 + DEEPENING_TERMS),
        emission_basis=emission_basis,
        deepening_basis=deepening_basis,
        rest=rest,
        ratio_bounds=torch.cat([deepening_bounds, output_bounds]),
        lam=lam,
        error_bound=0.0,
    )
    error = _measured_error(tables, lattice)
    return {**dataclasses.asdict(tables), "error_bound": error}


def _measured_error(tables: TwinTables, lattice: tuple) -> float:
    """Largest |table − exact| activity at _CHECKS random points (fixed seed) of each table."""
    generator = torch.Generator().manual_seed(_CHECK_SEED)
    u = torch.rand(_CHECKS, 4, generator=generator, dtype=_DTYPE)
    lam = tables.lam
    low, high = tables.ratio_bounds[:, 0], tables.ratio_bounds[:, 1]
    drive, inhibition = _magnitudes("drive", lam, u[:, 0]), _magnitudes("inhibition", lam, u[:, 1])
    kappa = _magnitudes("deepening", lam, u[:, 2])
    rho = low[0] + u[:, 3] * (high[0] - low[0])
    deepening = torch.stack([kappa, kappa * rho], 1)
    g = input_spike(*lattice)[0]
    profile = (deepening @ tables.deepening_basis).clamp_min(0.0)
    exact_hidden = _moments(drive[:, None] * g, inhibition[:, None] * g**2, profile, lattice)[0]
    table_hidden = hidden_response(tables, drive, inhibition, deepening)[:, 0]

    d = _magnitudes("output_drive", lam, u[:, 0])
    r = low[1:] + u[:, 1:3] * (high[1:] - low[1:])
    coefficients = torch.cat([d[:, None], d[:, None] * r], 1)
    exact_output = _moments(
        (coefficients @ tables.emission_basis).clamp_min(0.0), None, None, lattice
    )[0]
    table_output = output_response(tables, coefficients)[:, 0]
    return max(
        (table_hidden - exact_hidden).abs().max().item(),
        (table_output - exact_output).abs().max().item(),
    )


def twin_tables(
    n_time: int, time_extent: float, lam: float, n_kinks: int, grid: tuple[int, ...] = GRID
) -> TwinTables:
    """The twin's tables for this lattice (module doc), built once and cached on disk.

    ``grid``: nodes per axis (see :data:`GRID`, each >= 2). Cost: one exact single-neuron
    profile per node (Nt = 32, Λ = 200: ~10 ms each, 20 000 nodes for the default grid).
    """
    validate_lattice(n_time, time_extent, lam)
    validate_kinks(n_kinks)
    if n_kinks == 0:
        raise ValueError("n_kinks must be >= 2: the activity is normalised by the kinks, got 0")
    return _cached_tables((n_time, float(time_extent), float(lam), n_kinks), checked_grid(grid))


def checked_grid(grid: object) -> tuple[int, ...]:
    """``grid`` as a tuple of :data:`GRID`'s length of integers >= 2, else ValueError."""
    values = tuple(grid) if isinstance(grid, (tuple, list)) else ()
    if len(values) != len(GRID) or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in values
    ):
        raise ValueError(
            f"twin_grid must be {len(GRID)} integers >= 2 (nodes per axis, see GRID), got {grid!r}"
        )
    return values


@functools.lru_cache(maxsize=8)
def _cached_tables(lattice: tuple, grid: tuple[int, ...]) -> TwinTables:
    code = source_digest(sys.modules[__name__], exact, physics)
    key = [*lattice, *grid, code]

    def sound(stored: dict[str, object]) -> bool:
        return all(torch.isfinite(v).all() for v in stored.values() if isinstance(v, Tensor))

    return TwinTables(**load_or_build("twin_tables", key, lambda: _build(lattice, grid), sound))
