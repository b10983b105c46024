"""The Triton kernel of :mod:`qnn_torch.functional.fused_local` (imported at first use:
importing Triton costs ~0.15 s, and CPU runs never need it). Under ``TRITON_INTERPRET=1``,
set before Triton is imported, it runs in Triton's CPU interpreter."""

import triton
import triton.language as tl


@triton.jit
def local_half_sweep_kernel(
    phi_ptr,
    drive_ptr,
    inhibition_ptr,
    profile_ptr,
    params_ptr,
    seed_ptr,
    accepted_ptr,
    n_sites,
    n_neurons,
    n_time,
    parity,
    HAS_INHIBITION: tl.constexpr,
    SHARED_NOISE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Sites i of parity ``parity`` (flat over paths × Nt/2): path i // (Nt/2), slice
    2·(i mod Nt/2) + parity. params: (v scale w/(a·2¹⁵), a, Λ/4) in φ's dtype."""
    pid = tl.program_id(0)
    site = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = site < n_sites
    half = n_time // 2
    path = site // half
    t = 2 * (site % half) + parity
    before = tl.where(t == 0, n_time - 1, t - 1)
    after = tl.where(t == n_time - 1, 0, t + 1)
    row_start = path * n_time
    cur = tl.load(phi_ptr + row_start + t, mask=mask, other=0.0)
    neighbours = tl.load(phi_ptr + row_start + before, mask=mask, other=0.0) + tl.load(
        phi_ptr + row_start + after, mask=mask, other=0.0
    )
    profile = tl.load(profile_ptr + t, mask=mask, other=0.0)
    A = tl.load(drive_ptr + path, mask=mask, other=0.0) * profile
    v_scale = tl.load(params_ptr)
    a = tl.load(params_ptr + 1)
    K = tl.load(params_ptr + 2)

    # The neurons of a row draw the same numbers with shared noise (a static branch).
    if SHARED_NOISE:  # noqa: SIM108
        counter = (path // n_neurons) * half + site % half
    else:
        counter = site
    word_k, word_j, _, _ = tl.randint4x(tl.load(seed_ptr), counter.to(tl.uint32))
    k = (word_k.to(tl.uint32, bitcast=True) >> 16).to(tl.int32) - 32768
    v = (k.to(cur.dtype) + 0.5) * v_scale
    j = word_j.to(tl.uint32, bitcast=True)
    u = (j.to(cur.dtype) + 0.5) * 2.3283064365386963e-10  # 2⁻³²

    # −ΔS = v·(nb − 2a²·h·Y), Y = A + 1/a² + K·(2h² + a²v²/2 − 2), h = φ + a·v/2.
    a2 = a * a
    h = cur + 0.5 * a * v
    y = A + 2.0 * K * h * h + 0.5 * a2 * K * v * v + (1.0 / a2 - 2.0 * K)
    minus_delta = v * (neighbours - 2.0 * a2 * h * y)
    new = cur + a * v
    if HAS_INHIBITION:  # C = β·g²: −a·C·((φ'² − 1)⁴ − (φ² − 1)⁴)
        C = tl.load(inhibition_ptr + path, mask=mask, other=0.0) * profile * profile
        w_new = (new * new - 1.0) * (new * new - 1.0)
        w_old = (cur * cur - 1.0) * (cur * cur - 1.0)
        minus_delta -= a * C * (w_new * w_new - w_old * w_old)
    accept = (minus_delta > tl.log(u)) & mask
    tl.store(phi_ptr + row_start + t, tl.where(accept, new, cur), mask=mask)
    tl.store(accepted_ptr + pid, tl.sum(accept.to(tl.int32), axis=0))
