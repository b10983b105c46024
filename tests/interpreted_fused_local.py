"""Runs the fused local sweep in Triton's CPU interpreter, for tests/test_fused_local.py.

Triton reads TRITON_INTERPRET when it is imported, so the test starts this module in a
fresh process with it and QNN_TORCH_FUSED_LOCAL=1 set (the kernel then runs on CPU tensors):
``python -m tests.interpreted_fused_local CASE OUT``. The case's
results go to OUT (torch.save).
"""

import dataclasses
import sys

import torch

from qnn_torch import Network, SamplerConfig, simulate
from qnn_torch.functional import fused_local
from qnn_torch.functional.sampler import LatticeFields
from qnn_torch.simulate import run_sampler

from .conftest import SMALL


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
    }
    results = cases[case]()
    torch.save({**results, "fused sweeps": len(calls)}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
