"""The τ_int estimator against AR(1) series, whose autocorrelation time is known exactly;
constant chains (stuck, or agreeing exactly) give unknown errors, never 0 ± 0."""

from __future__ import annotations

import math

import pytest
import torch

from qnn_torch.functional.observables import (
    binned_autocorrelation_time,
    chain_mean_and_error,
    gap_in_sigmas,
    integrated_autocorrelation_time,
    student_t_cdf,
    student_t_sigmas,
)

CHAINS, LENGTH = 32, 2**15


def ar1(rho: float, seed: int) -> torch.Tensor:
    """CHAINS stationary AR(1) series x_t = ρ·x_{t−1} + √(1 − ρ²)·e_t, shape (CHAINS, LENGTH).

    ρ(k) = ρ^k, so τ_int = 1/2 + Σ_{k≥1} ρ^k = (1 + ρ)/(2(1 − ρ)). Built as the moving
    average x_t = √(1 − ρ²)·Σ_{k<K} ρ^k·e_{t−k} (one FFT), with ρ^K < 1e-17.
    """
    memory = math.ceil(math.log(1e-17) / math.log(rho)) if rho > 0 else 1
    kernel = (1.0 - rho * rho) ** 0.5 * rho ** torch.arange(memory, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(CHAINS, LENGTH + memory, dtype=torch.float64, generator=generator)
    size = LENGTH + 2 * memory
    spectrum = torch.fft.rfft(noise, n=size) * torch.fft.rfft(kernel, n=size)
    return torch.fft.irfft(spectrum, n=size)[:, memory : memory + LENGTH]


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("bin_length", [1, 8])
def test_binned_autocorrelation_time_of_ar1(rho: float, bin_length: int):
    # Statistical error of Sokal's estimate: √(2(2W + 1)/N) ≈ 2% at ρ = 0.95 (W ≈ 5τ ≈ 100,
    # N = 32·2¹⁵); biases: window ρ^W ≈ 1%, chain means ≈ −2W/n ≈ −0.6%. Tolerance 8%.
    expected = (1.0 + rho) / (2.0 * (1.0 - rho))
    series = ar1(rho, seed=int(100 * rho) + bin_length)
    bins = series.unflatten(-1, (LENGTH // bin_length, bin_length)).mean(-1)
    variance = series.var(-1, correction=0).mean(-1)
    tau = binned_autocorrelation_time(bins, bin_length, variance)
    print(f"ρ = {rho}, L = {bin_length}: τ_int {tau.item():.3f}, exact {expected:.3f}")
    assert tau.shape == ()
    assert tau.item() == pytest.approx(expected, rel=0.08)


def test_constant_chains_give_unknown_errors_not_zero():
    # 0.1 is not exact in binary: its mean over 7 chains rounds, a spread test would not see
    # the agreement; exact comparison does.
    chains = torch.tensor([[0.1] * 7, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]], dtype=torch.float64)
    mean, error = chain_mean_and_error(chains)
    assert mean[1].item() == 4.0
    assert math.isinf(error[0]) and error[1].item() == pytest.approx((28 / 6 / 7) ** 0.5)
    for value in (1.0, 0.1):
        constant = torch.full((2, 1000), value, dtype=torch.float64)
        assert math.isinf(integrated_autocorrelation_time(constant))
        bins = constant.unflatten(-1, (100, 10)).mean(-1)
        assert math.isinf(binned_autocorrelation_time(bins, 10, torch.tensor(0.0)))  # not NaN


def test_gap_in_sigmas_of_untrusted_estimates_is_infinite():
    gap = gap_in_sigmas(
        torch.tensor([0.3, 0.3, 0.0]),
        torch.tensor([0.03, 0.03, math.inf]),
        torch.tensor([0.3 + 0.05, 0.3, 0.3]),
        torch.tensor([0.04, 0.04, 0.04]),
    )
    assert gap[0].item() == pytest.approx(1.0) and gap[1].item() == 0.0
    assert math.isinf(gap[2])  # a stuck start is never consistent with a healthy one


@pytest.mark.parametrize(
    ("t", "dof", "cdf"),
    [(12.706, 1, 0.975), (4.303, 2, 0.975), (2.776, 4, 0.975), (2.365, 7, 0.975),
     (2.228, 10, 0.975), (1.0, 1, 0.75), (0.0, 5, 0.5), (-2.228, 10, 0.025)],
)  # fmt: skip
def test_student_t_cdf_matches_the_tables(t: float, dof: int, cdf: float):
    assert student_t_cdf(t, dof) == pytest.approx(cdf, abs=2e-5)


def test_student_t_sigmas_keep_the_gaussian_tail():
    """3σ from C chains: the t whose one-sided tail is the Gaussian's 0.135 %."""
    tail = 0.5 * math.erfc(3.0 / math.sqrt(2.0))
    margins = [student_t_sigmas(3.0, chains) for chains in (2, 3, 4, 8, 16, 64, 4096)]
    for chains, t in zip((2, 3, 4, 8, 16, 64, 4096), margins, strict=True):
        assert 1.0 - student_t_cdf(t, chains - 1) == pytest.approx(tail, rel=1e-6)
    assert margins == sorted(margins, reverse=True)  # more chains, a smaller margin
    assert margins[3] == pytest.approx(4.530, abs=1e-3) and margins[-1] == pytest.approx(
        3.0, abs=0.01
    )
    with pytest.raises(ValueError, match="chains must be an integer >= 2, got 1"):
        student_t_sigmas(3.0, 1)
    with pytest.raises(ValueError, match="sigmas must be a finite number > 0"):
        student_t_sigmas(0.0, 8)
