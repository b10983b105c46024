"""Threefry2x32-20 in int32 tensor operations: Random123's known answers, the numbers it
gives, and the same words compiled and eager."""

from __future__ import annotations

import math

import pytest
import torch

from qnn_torch.functional.sampler import check_counter_range
from qnn_torch.functional.threefry import (
    normal_box_muller,
    signed_word,
    stage_keys,
    sweep_key,
    symmetric_step,
    threefry2x32,
    uniform_open,
)

F = 0xFFFFFFFF
PI = (0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344)


def words(counter: tuple[int, int], key: tuple[int, int], rounds: int = 20) -> list[int]:
    out = threefry2x32(
        tuple(torch.tensor([signed_word(c)], dtype=torch.int32) for c in counter),
        tuple(signed_word(k) for k in key),
        rounds=rounds,
    )
    return [int(w) & F for w in out]


# random123/tests/kat_vectors: counter words, key words, output words.
@pytest.mark.parametrize(
    ("counter", "key", "rounds", "expected"),
    [
        ((0, 0), (0, 0), 20, (0x6B200159, 0x99BA4EFE)),
        ((F, F), (F, F), 20, (0x1CB996FC, 0xBB002BE7)),
        (*PI, 20, (0xC4923A9C, 0x483DF7A0)),
        ((0, 0), (0, 0), 13, (0x9D1C5EC6, 0x8BD50731)),
        (*PI, 13, (0xBA3E4725, 0xF27D669E)),
    ],
)
def test_random123_known_answers(counter, key, rounds, expected):
    assert words(counter, key, rounds) == list(expected)


def test_outputs_are_elementwise_and_broadcast():
    """A site's words depend on its counter only: batched, broadcast or one by one."""
    site = torch.arange(6, dtype=torch.int32)[:, None]
    row = torch.arange(3, dtype=torch.int32)[None, :]
    key = sweep_key(2**40 + 5, 9)
    batched = threefry2x32((site, row), key)
    for s in range(6):
        for r in range(3):
            one = words((s, r), tuple(int(k) for k in key))
            assert [int(w[s, r]) & F for w in batched] == one


def test_compiled_words_equal_eager_words():
    """The wrapping int32 additions and shifts give the same words through inductor."""
    counter = (
        torch.arange(-(2**12), 2**12, dtype=torch.int32),
        torch.tensor(-7, dtype=torch.int32),
    )
    key = sweep_key(0xFEDCBA9876543210, 3)
    compiled = torch.compile(threefry2x32, dynamic=True)
    for got, expected in zip(compiled(counter, key), threefry2x32(counter, key), strict=True):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniforms_and_steps_are_uniform_and_symmetric(dtype):
    n = 2**18
    w0, w1 = threefry2x32((torch.arange(n, dtype=torch.int32), torch.tensor(1)), sweep_key(3, 4))
    u = uniform_open(w0, dtype).double()
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    # Mean within 5 standard errors, and χ² of 64 bins within 5 of its standard deviations.
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    counts = torch.bincount((u * 64).long(), minlength=64).double()
    chi2 = float(((counts - n / 64) ** 2 / (n / 64)).sum())
    assert abs(chi2 - 63) < 5 * math.sqrt(2 * 63)
    # Neighbouring counters, and the two words of one counter, are uncorrelated.
    step = symmetric_step(w1, 0.25, dtype).double()
    for a, b in ((u[:-1], u[1:]), (u, step)):
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 5 / math.sqrt(n)
    assert float(step.abs().max()) < 0.25
    grid = symmetric_step(torch.arange(2**16, dtype=torch.int32), 0.25, dtype)
    assert torch.equal(grid, -grid.flip(0))  # the grid is exactly symmetric about 0
    assert abs(float(step.mean())) < 5 * 0.25 / math.sqrt(3 * n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_words_give_uniforms_strictly_inside_the_interval(dtype):
    extremes = torch.tensor([-(2**31), -(2**31) + 1, -1, 0, 2**31 - 1], dtype=torch.int32)
    u = uniform_open(extremes, dtype)
    assert bool((u > 0).all()) and bool((u < 1).all())
    assert bool(torch.isfinite(u.log()).all())


def test_sweep_keys_differ_by_seed_and_stage_and_refuse_bad_values():
    keys = {
        tuple(int(k) for k in sweep_key(seed, stage))
        for seed in (0, 1, 2**32)
        for stage in (0, 1, 2**32)
    }
    assert len(keys) == 9
    for bad in (-1, 2**64, True, 1.5):
        with pytest.raises(ValueError, match="seed must be an integer"):
            sweep_key(bad, 0)
        with pytest.raises(ValueError, match="stage must be an integer"):
            sweep_key(0, bad)


def test_stage_keys_are_the_sweep_keys_of_each_stage():
    stages = [0, 7, 2**32 + 7, 3 * 2**32 + 1, 2**64 - 1]
    k0, k1 = stage_keys(11, stages)
    assert k0.shape == k1.shape == (len(stages),)
    for i, stage in enumerate(stages):
        assert (int(k0[i]), int(k1[i])) == tuple(int(k) for k in sweep_key(11, stage))
    with pytest.raises(ValueError, match="stage must be an integer"):
        stage_keys(11, [1, -1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_muller_gives_standard_normals(dtype):
    """Both normals of a pair, together: Kolmogorov–Smirnov distance to Φ below its 0.1 %
    critical value 1.95/√n, with the mean, variance and fourth moment within 5 standard
    errors; and the two uncorrelated (within 5 standard errors), as are their squares."""
    pairs = 2**17
    counters = torch.arange(pairs, dtype=torch.int32)
    w0, w1 = threefry2x32((counters, torch.tensor(2)), sweep_key(5, 6))
    sine, cosine = (z.double() for z in normal_box_muller(w0, w1, dtype))
    pair = torch.stack((sine, cosine), -1)
    assert pair.shape == (pairs, 2) and bool(torch.isfinite(pair).all())
    assert abs(float((sine * cosine).mean())) < 5 / math.sqrt(pairs)
    squares = torch.corrcoef(torch.stack((sine**2, cosine**2)))[0, 1]
    assert abs(float(squares)) < 5 / math.sqrt(pairs)
    z = pair.flatten()
    n = z.numel()
    ordered = z.sort().values
    cdf = 0.5 * (1 + torch.erf(ordered / math.sqrt(2)))
    ranks = torch.arange(1, n + 1, dtype=torch.float64) / n
    distance = float(torch.maximum(ranks - cdf, cdf - (ranks - 1 / n)).max())
    assert distance < 1.95 / math.sqrt(n)
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / n)
    # Extreme words stay finite: |z| below √(−2 ln u_min).
    extremes = torch.tensor([-(2**31), 0, 2**31 - 1], dtype=torch.int32)
    grid = torch.stack(normal_box_muller(extremes[:, None], extremes[None, :], dtype))
    assert bool(torch.isfinite(grid).all()) and float(grid.abs().max()) < 7.0


def test_counters_and_row_identities_must_fit_31_bits():
    check_counter_range(2**22 - 1, 512, 2**31 - 1)  # the largest that fit: no error
    with pytest.raises(ValueError, match="neurons=4194304, n_time=512"):
        check_counter_range(2**22, 512, 1)
    with pytest.raises(ValueError, match="rows=2147483648"):
        check_counter_range(1, 512, 2**31)
