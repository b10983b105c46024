"""Sequential decisions: only the contested outputs are sampled, and the pooled phases stay
exact."""

import torch

from qnn_torch import SamplerConfig
from qnn_torch.decision import sequential_top
from qnn_torch.functional.activity_table import driven_activity
from qnn_torch.functional.layer import contested
from qnn_torch.functional.physics import kink_path, potential_sum, spike_profile

from .conftest import SMALL


def run(drive: torch.Tensor, sigmas: float, **settings):
    path = kink_path(**SMALL, dtype=torch.float64)
    config = SamplerConfig(**SMALL, **settings)
    profile = spike_profile(path).float()
    return sequential_top(drive, profile, float(potential_sum(path, SMALL["lam"])), config, sigmas)


def test_phases_pool_into_the_exact_activities():
    """With a margin no output can reach, every output is measured in every phase (the
    batch re-laid out between them, chains continued from their paths): the pooled
    activities are within 4σ of the exact ones."""
    drive = torch.tensor([[0.0, 20.0, 40.0, 80.0], [10.0, 30.0, 60.0, 120.0]])
    result = run(drive, 1e9, chains=16, thermalization=200, sweeps=20, max_sweeps=300, seed=3)
    assert result.sweeps.tolist() == [300, 300]
    assert result.output_sweeps.tolist() == [1200, 1200]
    z = (result.activity - driven_activity(drive.double(), **SMALL)) / result.stderr
    assert z.abs().max() < 4.0, f"z-scores {z.tolist()}"


def test_outputs_far_behind_are_left_and_the_top_is_the_exact_one():
    """Outputs far below the top stop after the first block; the close pair goes on."""
    drive = torch.tensor([[0.0, 10.0, 118.0, 120.0], [0.0, 120.0, 5.0, 10.0]])
    block, cap = 20, 400
    result = run(drive, 3.0, chains=8, thermalization=200, sweeps=block, max_sweeps=cap, seed=1)
    exact = driven_activity(drive.double(), **SMALL)
    assert result.activity.argmax(-1).tolist() == exact.argmax(-1).tolist() == [3, 1]
    assert result.sweeps[0] > block  # the pair 118 / 120 needs more than one block
    # Row 0: outputs 0 and 1 were measured for the first block only.
    assert result.output_sweeps[0] == 2 * block + 2 * result.sweeps[0]
    assert result.sweeps[1] == block and result.output_sweeps[1] == 4 * block
    assert torch.isfinite(result.stderr).all()


def test_contested_outputs_chain_by_chain_with_padding():
    top = torch.tensor([1.0, 1.1, 0.9, 1.0])
    chains = torch.stack(
        [top, top - 0.1, top - torch.tensor([0.0, 0.2, -0.1, 0.1]), torch.zeros(4)], -1
    )[None]  # margins: 0.1 in every chain; 0, 0.2, −0.1, 0.1; far
    stderr = torch.full((1, 4), 0.05)
    assert contested(chains, stderr, 3.0).tolist() == [[True, False, True, False]]
    # Padding slots take no part, even as the top.
    padded = torch.cat([chains, chains[..., :1] + 1.0], -1)
    valid = torch.tensor([[True, True, True, True, False]])
    assert contested(padded, torch.full((1, 5), 0.05), 3.0, valid).tolist() == [
        [True, False, True, False, False]
    ]
    stderr[0, 3] = float("inf")  # stuck chains decide nothing
    assert contested(chains, stderr, 3.0).tolist() == [[True, False, True, True]]
