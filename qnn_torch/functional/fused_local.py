"""The local checkerboard sweep of independent neurons as one Triton kernel per half-sweep.

Eager :func:`~qnn_torch.functional.sampler.local_sweep` makes about fifteen passes over
memory per half-sweep (random words, −ΔS, acceptance, update), each a kernel launch on a
GPU. For neurons without links (the fields A = α_n·g_t, K = Λ/4, C = β_n·g_t² depend on
no other neuron) one kernel does it all: it reads φ at a slice and its two neighbours,
draws its two uniforms from Philox (counter-based, so every site draws independently and
in parallel), and writes the new φ. The move is the eager one: proposal v = (k + 1/2)/2¹⁵
·w/a from 16 bits k (exactly symmetric), u = (j + 1/2)/2³² from 32 bits j, −ΔS of
:func:`~qnn_torch.functional.sampler.local_log_ratio` (folded-K form), accept where
−ΔS > log u. Each half-sweep draws a fresh 64-bit Philox key from the sampler's
generator, and the counter of a site is its flat index (of its row's slice with shared
noise), so the same seed on the same device gives the same numbers.

:func:`supports` says when it applies: a CUDA path with Triton installed, unless
``QNN_TORCH_FUSED_LOCAL=0`` turns it off (it has not yet run on a GPU); on CPU only in
Triton's interpreter, asked for with ``TRITON_INTERPRET=1`` and ``QNN_TORCH_FUSED_LOCAL=1``
(slow, for tests and debugging).
The kernel itself, :mod:`qnn_torch.functional.fused_local_kernel`, is imported at first use.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from qnn_torch.functional.sampler import LatticeFields

# Read by triton.jit when the kernel is defined, at its module's first import.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
# QNN_TORCH_FUSED_LOCAL: "0" turns the kernel off (the eager sweep everywhere); "1" also
# lets it run on CPU tensors under TRITON_INTERPRET=1; otherwise it runs on CUDA alone.
_SETTING = os.environ.get("QNN_TORCH_FUSED_LOCAL", "")
_TRITON = importlib.util.find_spec("triton") is not None  # without importing it
# Sites per program. The interpreter runs programs one after another: larger blocks there.
_BLOCK = 2**14 if _INTERPRETED else 1024
_PROPOSAL_BITS = 15  # k has 16 bits: (k + 1/2)/2¹⁵ ∈ (−1, 1)


@functools.cache
def _kernel() -> Callable:
    """The Triton kernel, imported at first use."""
    return importlib.import_module(
        "qnn_torch.functional.fused_local_kernel"
    ).local_half_sweep_kernel


@functools.lru_cache(maxsize=16)
def _parameters(
    half_width: float, spacing: float, lam: float, *, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """The kernel's params (v scale w/(a·2¹⁵), a, Λ/4) in φ's dtype: a tensor, since Triton
    passes Python floats as float32. Cached: one copy to the device per setting."""
    values = [half_width / 2**_PROPOSAL_BITS, spacing, 0.25 * lam]
    return torch.tensor(values, dtype=dtype, device=device)


def supports(phi: Tensor, fields: LatticeFields) -> bool:
    """Whether :func:`local_sweep` runs here: Triton present and not turned off
    (``QNN_TORCH_FUSED_LOCAL=0``), φ contiguous on CUDA (or on CPU in Triton's interpreter,
    asked for with ``QNN_TORCH_FUSED_LOCAL=1``), neurons without links, an even number of
    slices, fewer than 2³² sites per half-sweep (the Philox counters)."""
    on_device = phi.is_cuda or (_INTERPRETED and _SETTING == "1")
    return (
        _TRITON
        and _SETTING != "0"
        and on_device
        and phi.is_contiguous()
        and fields.excite is None
        and fields.inhibit is None
        and phi.shape[-1] % 2 == 0
        and phi.numel() // 2 < 2**32
    )


def local_sweep(
    phi: Tensor, fields: LatticeFields, *, width: float, generator: torch.Generator
) -> Tensor:
    """One checkerboard sweep of independent neurons (in place), even slices then odd.

    Same move and statistics as :func:`~qnn_torch.functional.sampler.local_sweep`; phi
    (R, N, Nt) contiguous. Returns the number of accepted sites (0-d int64 tensor).
    ValueError where :func:`supports` is false.
    """
    if not supports(phi, fields):
        raise ValueError(
            "fused_local.local_sweep needs Triton (not turned off by QNN_TORCH_FUSED_LOCAL=0), "
            "a contiguous CUDA path (or CPU with TRITON_INTERPRET=1 and "
            "QNN_TORCH_FUSED_LOCAL=1), neurons without links, an even number of slices and "
            f"< 2³² sites per half-sweep; got device {phi.device}, contiguous "
            f"{phi.is_contiguous()}, links "
            f"{fields.excite is not None or fields.inhibit is not None}, shape {tuple(phi.shape)}"
        )
    R, N, Nt = phi.shape
    n_sites = R * N * (Nt // 2)
    like = {"dtype": phi.dtype, "device": phi.device}
    params = _parameters(width / fields.spacing, fields.spacing, fields.lam, **like)
    drive = fields.drive.to(**like).contiguous()
    has_inhibition = fields.input_inhibition is not None
    # Without inhibition the kernel never reads this pointer: any tensor of the right kind.
    inhibition = fields.input_inhibition if has_inhibition else drive
    inhibition = inhibition.to(**like).contiguous()
    profile = fields.profile.to(**like).contiguous()
    seeds = torch.empty(2, dtype=torch.int64, device=phi.device).random_(generator=generator)
    blocks = -(-n_sites // _BLOCK)
    accepted = torch.empty(2, blocks, dtype=torch.int32, device=phi.device)
    kernel = _kernel()
    # Triton launches on the current CUDA device: make it phi's.
    with torch.cuda.device(phi.device) if phi.is_cuda else contextlib.nullcontext():
        for parity in (0, 1):
            kernel[(blocks,)](
                phi,
                drive,
                inhibition,
                profile,
                params,
                seeds[parity:],
                accepted[parity],
                n_sites,
                N,
                Nt,
                parity,
                HAS_INHIBITION=has_inhibition,
                SHARED_NOISE=fields.shared_noise,
                BLOCK=_BLOCK,
            )
    return accepted.sum(dtype=torch.int64)
