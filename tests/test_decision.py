"""Sequential decisions: only the contested outputs are sampled, and the pooled phases stay
exact."""

import pytest
import torch

from qnn_torch import SamplerConfig
from qnn_torch.decision import _Tallies, sequential_top
from qnn_torch.functional.activity_table import driven_activity
from qnn_torch.functional.layer import contested
from qnn_torch.functional.observables import student_t_sigmas
from qnn_torch.functional.physics import kink_path, potential_sum, spike_profile
from tests.helpers import SMALL


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
    # At 3σ with 8 chains, row 1 is decided after its first block in 6–7 of 8 seeds.
    result = run(drive, 3.0, chains=8, thermalization=200, sweeps=block, max_sweeps=cap, seed=2)
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


def test_interim_looks_raise_the_bar_by_the_fourth_root_of_the_information():
    """A lead of 1.5 Student-t margins decides at the last look (information 1), not after
    a sixteenth of the sweeps, whose bar is twice as high (16^(1/4)); a lead of 3 does.
    Information outside (0, 1] is refused."""
    noise = 0.1 * torch.tensor([1.0, -1.0] * 4, dtype=torch.float64)  # C = 8 chains
    unit = student_t_sigmas(3.0, 8) * noise.std() / 8**0.5  # the bar at the last look
    stderr = torch.full((1, 2), 0.01, dtype=torch.float64)
    for lead, information, decided in [(1.5, 1.0, True), (1.5, 1 / 16, False), (3.0, 1 / 16, True)]:
        chains = torch.stack([lead * unit + noise, torch.zeros(8, dtype=torch.float64)], -1)
        got = contested(chains[None], stderr, 3.0, information=information)
        assert got.tolist() == [[True, not decided]], (lead, information)
    for information in (0.0, 1.5):
        with pytest.raises(ValueError, match="information must be in"):
            contested(chains[None], stderr, 3.0, information=information)


def test_an_output_left_behind_that_leads_again_comes_back():
    """Contenders are judged against the output of the largest mean so far; one left
    behind earlier that leads again is brought back, not ignored (without it, the others
    would be judged among themselves and output 2 would keep its stale lead)."""
    tallies = _Tallies(
        sums=torch.zeros(1, 4, 3, dtype=torch.float64),
        counts=torch.tensor([[40, 40, 20]]),  # output 2 was left behind after 20 sweeps
        stuck=torch.zeros(1, 3, dtype=torch.bool),
        paths=None,
    )
    noise = torch.tensor([0.0, 0.01, -0.01, 0.005], dtype=torch.float64)
    other = torch.tensor([0.02, -0.02, 0.01, -0.01], dtype=torch.float64)
    # Output 2 now has the largest mean, within the noise of the other two.
    means = torch.stack([0.90 + noise, 0.90 - noise, 0.905 + other], -1)[None]
    tallies.sums = means * tallies.counts[:, None, :]
    drive = torch.tensor([[100.0, 101.0, 102.0]])
    groups, valids = tallies.contenders(torch.tensor([0]), drive, 40, 40, 3.0)
    ((rows, index),), (valid,) = groups, valids
    assert rows.tolist() == [0] and sorted(index[valid].tolist()) == [0, 1, 2]


def test_chains_equal_to_the_top_tie_only_for_equal_drives():
    # (1, C=8, O=3): outputs 0 and 1 are equal in every chain, output 2 far behind.
    top = torch.linspace(0.5, 0.85, 8)
    third = top - 0.4 + 0.02 * (torch.arange(8) % 2)
    chains = torch.stack([top, top, third], -1)[None]
    stderr = torch.full((1, 3), 0.05)
    assert contested(chains, stderr, 3.0).tolist() == [[True, False, False]]
    same = torch.tensor([[10.0, 10.0, 1.0]])
    assert contested(chains, stderr, 3.0, drive=same).tolist() == [[True, False, False]]
    different = torch.tensor([[10.0, 10.5, 1.0]])  # equal so far, but they will part
    assert contested(chains, stderr, 3.0, drive=different).tolist() == [[True, True, False]]


@pytest.mark.parametrize(
    ("drive", "sigmas", "settings", "message"),
    [
        (torch.ones(4), 3.0, {}, r"drive must be a tensor of shape \(inputs, outputs\)"),
        (torch.tensor([[-50.0, 10.0]]), 3.0, {}, "drive must be finite and >= 0.*-50.0"),
        (torch.tensor([[float("nan"), 10.0]]), 3.0, {}, "drive must be finite and >= 0.*nan"),
        (torch.ones(2, 3), 0.0, {}, "sigmas must be a finite number > 0"),
        (torch.ones(2, 3), 3.0, {"max_sweeps": 0}, "config.max_sweeps must exceed"),
    ],
)
def test_bad_input_is_refused(drive, sigmas, settings, message):
    config = {"chains": 4, "sweeps": 10, "max_sweeps": 40, **settings}
    with pytest.raises(ValueError, match=message):
        run(drive, sigmas, **config)
