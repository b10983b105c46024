"""Runs the fused local sweep in Triton's CPU interpreter, for tests/test_fused_local.py.

Triton reads TRITON_INTERPRET when it is imported, so the test starts this module in a
fresh process with it and QNN_TORCH_FUSED_LOCAL=1 set (the kernel then runs on CPU tensors):
``python -m tests.interpreted_fused_local CASE OUT``. The case's
results go to OUT (torch.save).
"""

import dataclasses
import sys

import torch
import triton
import triton.language as tl

from qnn_torch import Network, SamplerConfig, simulate
from qnn_torch.functional import fused_local
from qnn_torch.functional.sampler import LatticeFields, local_log_ratio
from qnn_torch.simulate import run_sampler
from tests.helpers import SMALL


def relays(drives: torch.Tensor, inhibitions: torch.Tensor) -> Network:
    """Networks of one neuron driven and inhibited by one active input, batched."""
    net = Network().add_input("x").add_neuron("y").excite("x", "y", drives)
    return net.inhibit("x", "y", inhibitions)


def fields_of(phi: torch.Tensor, *, linked: bool) -> LatticeFields:
    """Undriven physics for paths phi (R, N, Nt), with links between the neurons or not."""
    R, N, Nt = phi.shape
    return LatticeFields(
        lam=60.0,
        spacing=1 / Nt,
        profile=torch.zeros(Nt, dtype=phi.dtype, device=phi.device),
        drive=torch.zeros(R, N, dtype=phi.dtype, device=phi.device),
        input_inhibition=None,
        excite=torch.zeros(R, N, N, dtype=phi.dtype, device=phi.device) if linked else None,
        inhibit=None,
        color_bounds=((0, N),),
    )


_LOCAL_SWEEP = fused_local.local_sweep
DRIVES, INHIBITIONS = torch.tensor([0.0, 120.0, 120.0]), torch.tensor([0.0, 0.0, 30.0])


def exact_case(dtype: torch.dtype) -> dict:
    """Local moves alone leave their starting paths slowly here (the inhibited neuron keeps
    a bias of ~2σ after 600 sweeps from a sawtooth), and every interpreted sweep is slow:
    the chains start equilibrated by bridge and cluster moves, and the fused local sweep
    then tunes its width and measures."""
    network = relays(DRIVES, INHIBITIONS)
    start = SamplerConfig(
        **SMALL,
        chains=256,
        thermalization=500,
        sweeps=1,
        algorithm="multilevel+cluster",
        dtype=dtype,
        seed=3,
    )
    paths = run_sampler(network.compile(start), start).paths
    config = dataclasses.replace(start, thermalization=100, sweeps=300, algorithm="local")
    result = run_sampler(network.compile(config), config, initial_paths=paths)
    return {
        "activity": result.activity[:, 0],  # (networks, neurons): one neuron
        "stderr": result.stderr[:, 0],
        "acceptance": result.acceptance["local"],
    }


def contract_case() -> dict:
    # Two unlinked outputs of equal drive in one row, and a third of another drive.
    net = Network().add_input("x")
    for name in ("a", "b", "c"):
        net.add_neuron(name)
    net.excite("x", "a", 50.0).excite("x", "b", 50.0).excite("x", "c", 150.0)
    config = SamplerConfig(**SMALL, chains=4, thermalization=0, sweeps=20, algorithm="local")
    phi = torch.zeros(2, 3, 8)
    try:
        _LOCAL_SWEEP(phi, fields_of(phi, linked=True), width=0.1, generator=torch.Generator())
        error = ""
    except ValueError as exc:
        error = str(exc)
    return {
        "paths": simulate(net, config).paths,
        "again": simulate(net, config).paths,
        "other seed": simulate(net, dataclasses.replace(config, seed=1)).paths,
        "supports unlinked": fused_local.supports(phi, fields_of(phi, linked=False)),
        "supports linked": fused_local.supports(phi, fields_of(phi, linked=True)),
        "supports strided": fused_local.supports(phi[..., ::2], fields_of(phi, linked=False)),
        "linked error": error,
    }


@triton.jit
def _philox_words(seed_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out (n, 2) int64: the two 32-bit words the kernel draws at counters 0 … n − 1."""
    counter = tl.arange(0, BLOCK)
    mask = counter < n
    first, second, _, _ = tl.randint4x(tl.load(seed_ptr), counter.to(tl.uint32))
    tl.store(out_ptr + 2 * counter, first.to(tl.uint32, bitcast=True).to(tl.int64), mask=mask)
    tl.store(out_ptr + 2 * counter + 1, second.to(tl.uint32, bitcast=True).to(tl.int64), mask=mask)


def replayed_sweep(phi: torch.Tensor, fields: LatticeFields, width: float, seeds: torch.Tensor):
    """The fused sweep replayed in eager torch: the kernel's Philox words for each site, its
    proposal and uniform, and −ΔS from sampler.local_log_ratio. Returns (paths, accepted)."""
    R, N, Nt = phi.shape
    half, a = Nt // 2, fields.spacing
    phi, accepted = phi.clone(), 0
    for parity in (0, 1):
        words = torch.empty(R * N * half, 2, dtype=torch.int64)
        _philox_words[(1,)](seeds[parity:], words, R * N * half, BLOCK=1024)
        site = torch.arange(R * N * half)
        counter = (site // half // N) * half + site % half if fields.shared_noise else site
        k = (words[counter, 0] >> 16) - 32768
        v = ((k.double() + 0.5) * (width / a) / 2**15).view(R, N, half)
        u = ((words[counter, 1].double() + 0.5) * 2.0**-32).view(R, N, half)
        t = 2 * torch.arange(half) + parity
        cur = phi[..., t]
        neighbours = phi[..., (t - 1) % Nt] + phi[..., (t + 1) % Nt]
        A = fields.drive[..., None] * fields.profile[t]
        C = fields.input_inhibition[..., None] * fields.profile[t] ** 2
        minus_delta = local_log_ratio(cur, v, neighbours, A, 0.25 * fields.lam, C, spacing=a)
        accept = minus_delta > u.log()
        phi[..., t] = torch.where(accept, cur + a * v, cur)
        accepted += int(accept.sum())
    return phi, accepted


def direct_case() -> dict:
    """One fused sweep against its replay, float64, with independent and shared noise."""
    generator = torch.Generator().manual_seed(5)
    results = {}
    for shared in (False, True):
        R, N, Nt = 3, 2, 8
        phi = torch.randn(R, N, Nt, dtype=torch.float64, generator=generator)
        fields = LatticeFields(
            lam=7.0,
            spacing=0.1,
            profile=torch.rand(Nt, dtype=torch.float64, generator=generator),
            drive=5 * torch.rand(R, N, dtype=torch.float64, generator=generator),
            input_inhibition=3 * torch.rand(R, N, dtype=torch.float64, generator=generator),
            excite=None,
            inhibit=None,
            color_bounds=((0, N),),
            shared_noise=shared,
        )
        state = generator.get_state()
        seeds = torch.empty(2, dtype=torch.int64).random_(generator=generator)  # the kernel's
        generator.set_state(state)
        expected, expected_accepted = replayed_sweep(phi, fields, 0.3, seeds)
        accepted = _LOCAL_SWEEP(phi, fields, width=0.3, generator=generator)
        results[f"shared {shared}"] = {
            "largest difference": float((phi - expected).abs().max()),
            "accepted": int(accepted),
            "replayed accepted": expected_accepted,
        }
    return results


def main(case: str, out: str) -> None:
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return _LOCAL_SWEEP(*args, **kwargs)

    fused_local.local_sweep = counted  # the sampler calls it through the module
    cases = {
        "exact float32": lambda: exact_case(torch.float32),
        "exact float64": lambda: exact_case(torch.float64),
        "contract": contract_case,
        "direct": direct_case,
    }
    results = cases[case]()
    torch.save({**results, "fused sweeps": len(calls)}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
