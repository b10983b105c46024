"""Threefry2x32-20, a counter-based random number generator, in int32 tensor operations.

Threefry (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC11;
the Random123 library; JAX's default generator) maps a 64-bit counter (x0, x1) and a
64-bit key (k0, k1) to two 32-bit words with additions, rotations and exclusive ors only:
with k2 = k0 ⊕ k1 ⊕ 0x1BD11BDA and x ← (x0 + k0, x1 + k1), twenty rounds

    x0 ← x0 + x1,   x1 ← rotl(x1, R_{r mod 8}) ⊕ x0,   R = (13, 15, 26, 6, 17, 29, 16, 24),

and after every fourth round s = (r + 1)/4 the key injection x0 ← x0 + k_{s mod 3},
x1 ← x1 + k_{(s+1) mod 3} + s, all mod 2³². Words are int32 tensors holding the 32 bits
in two's complement: additions wrap, and a logical right shift is an arithmetic one
masked. Without multiplications it runs on 32-bit lanes, twice as many per vector as
Philox4x32's 32 × 32 → 64-bit products need: compiled on this project's AVX2 CPU, 146 M
calls per second per thread, against 26 M (48 M with wrapping int64 products) for Philox
in int64 tensor operations (docs/benchmarks.md). It has no state: a site's numbers are a
pure function of its counter and key, so they do not depend on how the sites are batched,
chunked, compacted or ordered, nor on the device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
ROUNDS = 20
SKEIN_PARITY = 0x1BD11BDA
MASK32 = 0xFFFFFFFF


def signed_word(value: int) -> int:
    """The int32 value holding the 32-bit word ``value`` mod 2³² (two's complement)."""
    value &= MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


def threefry2x32(
    counter: tuple[Tensor, Tensor], key: tuple[Tensor | int, Tensor | int], rounds: int = ROUNDS
) -> tuple[Tensor, Tensor]:
    """The two output words of Threefry2x32 (int32 tensors of the broadcast shape) for
    ``counter`` (two int32 tensors) and ``key`` (two int32 words: ints in the int32 range,
    or tensors, such as one key per stage (S, 1, 1)), all broadcast together. ``rounds`` =
    20 is the standard, tested against Random123's known answers. After the first round,
    which broadcasts, the words are updated in place: eagerly, half the passes over memory
    of fresh tensors each time (1.8× as fast at 10⁵ sites, 4× at 2·10⁶)."""
    k0, k1 = key
    k2 = k0 ^ k1 ^ signed_word(SKEIN_PARITY)
    keys = (k0, k1, k2)
    x0, x1 = counter[0] + k0, counter[1] + k1
    low: Tensor | None = None
    for r in range(rounds):
        bits = ROTATIONS[r % 8]
        if low is None:  # x0 + x1 has the broadcast shape: fresh tensors
            x0 = x0 + x1
            x1 = x1.bitwise_left_shift(bits).bitwise_or_(_low_bits(x1, bits)).bitwise_xor(x0)
            low = torch.empty_like(x1)
        else:
            x0 += x1
            _low_bits(x1, bits, out=low)  # before x1 shifts in place
            x1.bitwise_left_shift_(bits).bitwise_or_(low).bitwise_xor_(x0)
        if r % 4 == 3:
            s = r // 4 + 1
            x0 += keys[s % 3]
            x1 += keys[(s + 1) % 3] + s
    return x0, x1


def _low_bits(x: Tensor, bits: int, out: Tensor | None = None) -> Tensor:
    """The top ``bits`` bits of the words ``x`` moved to the bottom (a logical right shift
    by 32 − ``bits``: the arithmetic one, masked), the other half of a rotation left by
    ``bits``; written to ``out`` if given."""
    return torch.bitwise_right_shift(x, 32 - bits, out=out).bitwise_and_((1 << bits) - 1)


def sweep_key(seed: int, stage: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """The key of one stage (a sweep, or a move within it) of a run seeded with ``seed``:
    Threefry2x32 of the counter (stage mod 2³², stage / 2³²) under the seed's two 32-bit
    words. Two 0-d int32 tensors on ``device``."""
    k0, k1 = stage_keys(seed, [stage], device)
    return k0[0], k1[0]


def stage_keys(
    seed: int, stages: list[int], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """The keys of :func:`sweep_key` for many ``stages`` at once (one Threefry call on a
    tensor costs what one on a scalar does, about a millisecond eagerly): two int32
    tensors of shape (len(stages),) on ``device``."""
    for name, value in (("seed", seed), *(("stage", stage) for stage in stages)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
            raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")

    def words(values: list[int]) -> Tensor:
        return torch.tensor([signed_word(v) for v in values], dtype=torch.int32)

    counter = (words(stages), words([stage >> 32 for stage in stages]))
    k0, k1 = threefry2x32(counter, (signed_word(seed), signed_word(seed >> 32)))
    return k0.to(device), k1.to(device)


def uniform_open(word: Tensor, dtype: torch.dtype) -> Tensor:
    """u = (k + 1/2)·2⁻ᵇ, strictly inside (0, 1), from the top b bits k of a 32-bit word
    held as an int32: b = 32 in float64, and b = 23 in float32, where every such u is
    exact (rounding a 32-bit word to float32 could give u = 0, and log u = −∞)."""
    bits = min(32, round(-math.log2(torch.finfo(dtype).eps)))
    top = word.bitwise_right_shift(32 - bits)  # arithmetic: in [−2^(b−1), 2^(b−1))
    return top.to(dtype).add(2.0 ** (bits - 1) + 0.5).mul(2.0**-bits)


def symmetric_step(word: Tensor, half_width: float | Tensor, dtype: torch.dtype) -> Tensor:
    """x = half_width·(k + 1/2)/2¹⁵ from the low 16 bits of a word read as a signed k: a
    grid exactly symmetric in (−half_width, half_width), as a Metropolis proposal needs."""
    k = word.bitwise_and(0xFFFF).sub(0x8000)
    return k.to(dtype).add(0.5).mul(half_width / 2**15)


def normal_box_muller(word0: Tensor, word1: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The two independent standard normals (r·sin θ, r·cos θ), r = √(−2·ln u₀), θ = 2π·u₁
    (Box & Muller 1958), from the uniforms u₀, u₁ of :func:`uniform_open` of two words
    (broadcast together). As u₀ ≥ 2⁻²⁴ (float32) or 2⁻³³ (float64), |z| stays below 5.8
    or 6.8: tails of probability 8·10⁻⁹ and 10⁻¹¹ are cut (a proposal there is never
    made, as with torch's own normals: a bias far below any error bar)."""
    radius = uniform_open(word0, dtype).log_().mul_(-2.0).sqrt_()
    angle = uniform_open(word1, dtype).mul_(2.0 * math.pi)
    return angle.sin().mul(radius), angle.cos_().mul(radius)
