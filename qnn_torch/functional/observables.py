"""Statistics of Monte Carlo series: errors from independent chains, autocorrelation."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


def chain_mean_and_error(chain_means: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Mean over independent chains and its standard error s/√C.

    ``chain_means`` (..., C, ...) holds each chain's time average along ``dim``; chains are
    independent, so their spread measures the error whatever the autocorrelation within a
    chain (as long as each chain is much longer than its autocorrelation time). Chains
    that agree exactly cannot be told from stuck ones: their error is +inf (unknown), never
    a reassuring 0.
    """
    chains = chain_means.shape[dim]
    if chains < 2:
        raise ValueError(f"chains must be >= 2 for a standard error, got {chains}")
    mean = chain_means.mean(dim)
    error = chain_means.std(dim, correction=1) / chains**0.5
    agree = (chain_means == chain_means.narrow(dim, 0, 1)).all(dim)  # exactly, not ≈ 0
    return mean, error.masked_fill(agree, torch.inf)


def student_t_cdf(t: float, dof: int) -> float:
    """P(T ≤ t) for Student's t with ``dof`` (integer ≥ 1) degrees of freedom.

    Closed form for integer ν (Abramowitz & Stegun 26.7.3–4): with θ = atan(t/√ν) and
    c = cos²θ, F = 1/2 + (θ + sinθ·cosθ·Σ_{k=1}^{(ν−1)/2} b_k·c^{k−1})/π for odd ν, b_1 = 1,
    b_{k+1} = b_k·2k/(2k + 1); F = 1/2 + sinθ·Σ_{k=0}^{ν/2−1} e_k·c^k/2 for even ν, e_0 = 1,
    e_{k+1} = e_k·(2k + 1)/(2k + 2).
    """
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise ValueError(f"dof must be an integer >= 1, got {dof!r}")
    theta = math.atan(t / math.sqrt(dof))
    c, s = math.cos(theta) ** 2, math.sin(theta)
    if dof % 2:
        series, term = 0.0, 1.0
        for k in range(1, (dof - 1) // 2 + 1):
            series += term
            term *= c * 2 * k / (2 * k + 1)
        return 0.5 + (theta + s * math.cos(theta) * series) / math.pi
    series, term = 0.0, 1.0
    for k in range(dof // 2):
        series += term
        term *= c * (2 * k + 1) / (2 * k + 2)
    return 0.5 + 0.5 * s * series


@functools.lru_cache(maxsize=256)
def student_t_sigmas(sigmas: float, chains: int) -> float:
    """The Student-t margin with the one-sided tail of ``sigmas`` Gaussian standard errors,
    for an error measured from ``chains`` independent chains (ν = chains − 1).

    A mean that leads by ``sigmas`` errors estimated from C chains is a t statistic with
    C − 1 degrees of freedom, whose tails are heavier than the Gaussian's: requiring the
    returned t instead keeps the chance of a false lead at 1 − Φ(sigmas) (3σ: 0.13 %).
    E.g. 3σ: 19.2 (3 chains), 9.2 (4), 4.5 (8), 3.6 (16), 3.1 (64). Bisection on
    :func:`student_t_cdf`, to 1e-9.
    """
    if not (math.isfinite(sigmas) and sigmas > 0):
        raise ValueError(f"sigmas must be a finite number > 0, got {sigmas!r}")
    if isinstance(chains, bool) or not isinstance(chains, int) or chains < 2:
        raise ValueError(f"chains must be an integer >= 2, got {chains!r}")
    tail = 0.5 * math.erfc(sigmas / math.sqrt(2.0))  # 1 − Φ(sigmas)
    low, high = sigmas, sigmas
    while 1.0 - student_t_cdf(high, chains - 1) > tail:
        high *= 2.0
    while high - low > 1e-9 * high:
        middle = 0.5 * (low + high)
        if 1.0 - student_t_cdf(middle, chains - 1) > tail:
            low = middle
        else:
            high = middle
    return high


def gap_in_sigmas(mean_1: Tensor, error_1: Tensor, mean_2: Tensor, error_2: Tensor) -> Tensor:
    """|m₁ − m₂| / √(e₁² + e₂²): how many standard errors two independent estimates of the
    same quantity lie apart (e.g. runs from different starts). +inf where either error is
    (an untrusted estimate is never called consistent). Shapes broadcast."""
    gap = (mean_1 - mean_2).abs() / (error_1.square() + error_2.square()).sqrt()
    return gap.masked_fill(error_1.isinf() | error_2.isinf(), torch.inf)


def autocorrelation(series: Tensor) -> Tensor:
    """Normalised autocorrelation ρ(k), averaged over chains.

    ``series`` (..., C, n): C chains of length n. Each chain is centred on its own mean;
    the autocovariance is computed with an FFT (zero padded, no wrap-around) and averaged
    over chains before normalising by ρ(0). Returns (..., n). Constant chains (no variance)
    give ρ ≡ 0, lag 0 included.
    """
    n = series.shape[-1]
    x = series - series.mean(-1, keepdim=True)
    spectrum = torch.fft.rfft(x.double(), n=2 * n)
    cov = torch.fft.irfft(spectrum * spectrum.conj(), n=2 * n)[..., :n].mean(-2)
    c0 = cov[..., :1]
    return cov / c0.clamp_min(torch.finfo(cov.dtype).tiny) * (c0 > 0)


def integrated_autocorrelation_time(series: Tensor, window_factor: float = 5.0) -> Tensor:
    """Integrated autocorrelation time τ_int = 1/2 + Σ_{k=1}^{W} ρ(k) with Sokal's window.

    W is the smallest lag with W ≥ ``window_factor``·τ_int(W). ``series`` (..., C, n) are
    C independent chains; returns τ_int (...) in units of the series' step, so that the
    variance of a chain mean is 2·τ_int·σ²/n. Saturates (is underestimated) when τ_int
    approaches n / window_factor: run longer chains then. A series of one step, or constant
    chains, carry no correlation information: τ_int is +inf (unknown) then.
    """
    if series.shape[-1] < 2:
        return torch.full(series.shape[:-2], torch.inf, dtype=torch.float64, device=series.device)
    rho = autocorrelation(series)
    tau = rho.cumsum(-1) - 0.5  # τ(W) = 1/2 + Σ_{k=1}^{W} ρ(k) = Σ_{k=0}^{W} ρ(k) − 1/2
    lags = torch.arange(rho.shape[-1], device=rho.device, dtype=tau.dtype)
    done = lags >= window_factor * tau
    first = torch.where(done.any(-1), done.float().argmax(-1), rho.shape[-1] - 1)
    tau = tau.gather(-1, first[..., None]).squeeze(-1).clamp_min(0.5)
    constant = (series == series[..., :1]).all(-1).all(-1)  # exactly, not ≈ 0
    return tau.masked_fill(constant, torch.inf)


def binned_autocorrelation_time(bins: Tensor, bin_length: int, sample_variance: Tensor) -> Tensor:
    """τ_int of a raw series from its bin means (blocking plus Sokal).

    ``bins`` (..., C, nb) are means of ``bin_length`` consecutive samples; the variance of a
    chain mean is var_bins·2τ_bins/nb = σ²·2τ/n with n = nb·L, so
    τ = L·τ_bins·var_bins/σ². ``sample_variance`` (...) is σ² of the raw samples (pooled
    over chains). With bin_length 1 this is the plain Sokal estimate. A single bin per chain
    cannot show any correlation: τ is +inf (unknown) then, never a reassuring 0.5.
    """
    tau_bins = integrated_autocorrelation_time(bins)
    if bin_length == 1 or bins.shape[-1] < 2:
        return tau_bins
    var_bins = bins.var(-1, correction=0).mean(-1)
    ratio = var_bins / sample_variance.clamp_min(torch.finfo(sample_variance.dtype).tiny)
    tau = (bin_length * tau_bins * ratio).clamp_min(0.5)
    return tau.masked_fill(tau_bins.isinf(), torch.inf)  # constant bins: unknown, not NaN
