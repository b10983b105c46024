"""Philox4x32-10 in tensor operations: Random123's known answers and the numbers it gives."""

from __future__ import annotations

import math

import pytest
import torch

from qnn_torch.functional.philox import (
    MASK32,
    mulhilo,
    philox4x32,
    seed_key,
    symmetric_step,
    uniform_open,
)

F = 0xFFFFFFFF
PI = (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)


def words(counter: tuple[int, ...], key: tuple[int, int], rounds: int = 10) -> list[int]:
    out = philox4x32(tuple(torch.tensor([c]) for c in counter), key, rounds=rounds)
    return [int(w) for w in out]


@pytest.mark.parametrize(
    ("counter", "key", "rounds", "expected"),
    [
        ((0, 0, 0, 0), (0, 0), 10, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((F, F, F, F), (F, F), 10, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (*PI, 10, (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
        ((0, 0, 0, 0), (0, 0), 7, (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)),
        (*PI, 7, (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)),
    ],
)
def test_random123_known_answers(counter, key, rounds, expected):
    assert words(counter, key, rounds) == list(expected)


def test_mulhilo_is_the_exact_64_bit_product():
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2**32, (1000,), generator=generator, dtype=torch.int64)
    x[:3] = torch.tensor([0, 1, MASK32])
    for multiplier in (0xD2511F53, 0xCD9E8D57):
        hi, lo = mulhilo(multiplier, x)
        for value, h, low in zip(x.tolist(), hi.tolist(), lo.tolist(), strict=True):
            assert (h << 32) | low == multiplier * value


def test_outputs_are_elementwise_and_broadcast():
    """A site's words depend on its counter only: batched, broadcast or one by one."""
    site = torch.arange(6)[:, None]
    row = torch.arange(3)[None, :]
    batched = philox4x32((site, torch.tensor(7), row, torch.tensor(9)), seed_key(2**40 + 5))
    for s in range(6):
        for r in range(3):
            one = words((s, 7, r, 9), seed_key(2**40 + 5))
            assert [int(w[s, r]) for w in batched] == one


def test_uniforms_and_steps_are_uniform_and_symmetric():
    n = 2**18
    w0, w1, w2, w3 = philox4x32((torch.arange(n), torch.tensor(0), torch.tensor(1), 2), (3, 4))
    for w in (w0, w1, w2, w3):
        assert int(w.min()) >= 0 and int(w.max()) <= MASK32
    u = uniform_open(w0, torch.float64)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    # Mean within 5 standard errors, and χ² of 64 bins within 5 of its standard deviations.
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    counts = torch.bincount((u * 64).long(), minlength=64).double()
    chi2 = float(((counts - n / 64) ** 2 / (n / 64)).sum())
    assert abs(chi2 - 63) < 5 * math.sqrt(2 * 63)
    # Neighbouring counters are uncorrelated.
    correlation = float(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1])
    assert abs(correlation) < 5 / math.sqrt(n)
    step = symmetric_step(w1, 0.25, torch.float64)
    assert float(step.abs().max()) < 0.25
    grid = symmetric_step(torch.arange(2**16), 0.25, torch.float64)
    assert torch.equal(grid, -grid.flip(0))  # the grid is exactly symmetric about 0
    assert abs(float(step.mean())) < 5 * 0.25 / math.sqrt(3 * n)


def test_seed_keys_split_64_bits_and_refuse_the_rest():
    assert seed_key(0x0123456789ABCDEF) == (0x89ABCDEF, 0x01234567)
    for bad in (-1, 2**64, True, 1.5):
        with pytest.raises(ValueError, match="seed must be an integer"):
            seed_key(bad)
