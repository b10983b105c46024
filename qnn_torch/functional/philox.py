"""Philox4x32-10, a counter-based random number generator, in integer tensor operations.

Philox (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC11;
the Random123 library) is the generator of cuRAND, JAX and Triton. It maps a 128-bit
counter (c0, c1, c2, c3) and a 64-bit key (k0, k1) to four 32-bit words through ten rounds

    (c0, c1, c2, c3) ← (hi(M1·c2) ⊕ c1 ⊕ k0, lo(M1·c2), hi(M0·c0) ⊕ c3 ⊕ k1, lo(M0·c0)),
    (k0, k1) ← (k0 + W0, k1 + W1) mod 2³²,

with M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85. It has no state:
the numbers of a site are a pure function of its counter, so they do not depend on how
the sites are batched, chunked, compacted or ordered, nor on the device (integer
arithmetic is exact everywhere). Words are held in int64 tensors with values in
[0, 2³²); the 32 × 32-bit products are formed from 16-bit halves, so no intermediate
leaves int64 (no reliance on overflow). These are plain tensor operations: eager torch
runs them pass by pass, and ``torch.compile`` fuses them into one loop (C++ on CPU,
Triton on GPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10

Words = tuple[Tensor, Tensor, Tensor, Tensor]


def mulhilo(multiplier: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product ``multiplier``·x, x (...) int64 in
    [0, 2³²): with x = x_h·2¹⁶ + x_l, t = M·x_l and u = M·x_h + ⌊t/2¹⁶⌋ (each < 2⁴⁹),
    hi = ⌊u/2¹⁶⌋ and lo = (u mod 2¹⁶)·2¹⁶ + t mod 2¹⁶."""
    t = x.bitwise_and(0xFFFF).mul(multiplier)
    u = x.bitwise_right_shift(16).mul(multiplier).add(t.bitwise_right_shift(16))
    hi = u.bitwise_right_shift(16)
    lo = u.bitwise_and(0xFFFF).bitwise_left_shift(16).bitwise_or(t.bitwise_and(0xFFFF))
    return hi, lo


def philox4x32(
    counter: Words, key: tuple[int | Tensor, int | Tensor], rounds: int = ROUNDS
) -> Words:
    """The four 32-bit output words of Philox4x32 for ``counter`` (four int64 tensors with
    values in [0, 2³²), broadcast together) and ``key`` (two such words, ints or tensors);
    int64 tensors of the broadcast shape. ``rounds`` = 10 is the standard, tested against
    Random123's known answers."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for step in range(rounds):
        if step:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = mulhilo(PHILOX_M0, c0)
        hi1, lo1 = mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key (k0, k1) of a 64-bit seed: its low and high 32-bit words."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return seed & MASK32, seed >> 32


def uniform_open(word: Tensor, dtype: torch.dtype) -> Tensor:
    """u = (w + 1/2)·2⁻³² in (0, 1) from a 32-bit word (in [0, 1] once rounded to float32)."""
    return word.to(dtype).add(0.5).mul(2.0**-32)


def symmetric_step(word: Tensor, half_width: float, dtype: torch.dtype) -> Tensor:
    """x = half_width·(k + 1/2)/2¹⁵ from the low 16 bits of a word read as a signed k: a
    grid exactly symmetric in (−half_width, half_width), as a Metropolis proposal needs."""
    k = word.bitwise_and(0xFFFF).sub(0x8000)
    return k.to(dtype).add(0.5).mul(half_width / 2**15)
