"""Shared helpers of the tests: lattices and exact references for small and paper lattices."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from qnn_torch import Network
from qnn_torch.functional.exact import single_neuron_activity
from qnn_torch.functional.physics import kink_path

# A small lattice where the neuron tunnels and the local sampler equilibrates quickly.
SMALL = {"n_time": 32, "time_extent": 2.0, "lam": 60.0, "n_kinks": 2}
PAPER = {"n_time": 512, "time_extent": 0.7, "lam": 5000.0, "n_kinks": 4}


def exact_activity(
    lattice: dict, drives: torch.Tensor, inhibitions: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact activity of one neuron driven by one active input: drive ε, inhibition η."""
    return single_neuron_activity(
        drives,
        inhibitions,
        kink_path(**lattice, dtype=torch.float64),
        time_extent=lattice["time_extent"],
        lam=lattice["lam"],
    )


def assert_within(result_activity, result_stderr, expected, sigmas: float = 4.0) -> None:
    """Every Monte Carlo estimate lies within ``sigmas`` standard errors of the exact value.

    The errors must be finite: an infinite one (an untrusted estimate) would pass vacuously.
    """
    assert torch.isfinite(torch.as_tensor(result_stderr)).all(), f"errors {result_stderr}"
    z = (torch.as_tensor(result_activity).double() - expected) / torch.as_tensor(result_stderr)
    assert torch.all(z.abs() < sigmas), f"z-scores {z.tolist()} (estimates {result_activity})"


def twin_like_weight(seed: int = 0) -> torch.Tensor:
    """A (10, 784) weight like a trained twin's: a common offset ≈ 1 plus per-pixel structure."""
    generator = torch.Generator().manual_seed(seed)
    return (
        1.0
        + 0.3 * torch.randn(10, 784, generator=generator)
        + torch.rand(1, 784, generator=generator)
    )


class Numbered(Dataset):
    """``size`` images, each a 1-pixel tensor holding its own index."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        return torch.tensor([float(index)]), index % 10


def relays(drives: torch.Tensor, inhibitions: torch.Tensor) -> Network:
    net = Network().add_input("x").add_neuron("y")
    return net.excite("x", "y", drives).inhibit("x", "y", inhibitions)


def linked_pair() -> Network:
    net = Network().add_input("x").add_neuron("a").add_neuron("b")
    return net.excite("x", "a", 60.0).excite("a", "b", 30.0).inhibit("a", "b", 5.0)


# Networks of the compiled tests, alike so that the compiled moves are reused.
RELAYS = relays(torch.tensor([0.0, 60.0, 120.0]), torch.tensor([0.0, 0.0, 20.0]))
