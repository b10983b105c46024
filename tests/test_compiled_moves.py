"""The multilevel and sign-cluster moves compiled: the same paths as the eager source, and
the closed-form bridge equal to the midpoint rule it replaces."""

from __future__ import annotations

import math

import pytest
import torch

from qnn_torch import SamplerConfig
from qnn_torch.functional import compiled
from qnn_torch.functional.sampler import LatticeFields, bisection_blocks, bridge_tents
from qnn_torch.functional.threefry import normal_box_muller
from qnn_torch.simulate import run_sampler
from tests.helpers import RELAYS, SMALL, linked_pair


def midpoint_bridge(old: torch.Tensor, right: torch.Tensor, noise: torch.Tensor, L: int, a: float):
    """The proposal grown level by level, h = L/2 first: each midpoint of the points known
    so far gets their mean plus √(h·a/2) times its normal (old (R, n, m·L), right ends
    (R, n), noise (R, n, m·L): the normal of the midpoint at each slice)."""
    span = old.shape[-1]
    new = torch.empty(*old.shape[:-1], span + 1, dtype=old.dtype)
    new[..., :span:L] = old[..., ::L]
    new[..., span] = right
    h = L // 2
    while h >= 1:
        mid = (new[..., 0 : span - h : 2 * h] + new[..., 2 * h :: 2 * h]) / 2
        new[..., h : span : 2 * h] = mid + noise[..., h : span : 2 * h] * math.sqrt(h * a / 2)
        h //= 2
    return new[..., :span]


@pytest.mark.parametrize(
    ("levels", "shared"),
    [(1, False), (3, False), (3, True), (4, False)],
)
def test_the_closed_form_bridge_is_the_midpoint_rule(levels: int, shared: bool):
    """With every block accepted (no potential: A = K = 0), the move returns the bridge
    itself, which must equal the midpoint construction from the same normals (each from a
    pair of random words, two normals per pair). Nt = 20
    holds m = 10, 2 and 1 blocks of L = 2, 8 and 16 slices: the last block ends on the
    wrapped slice 0 (L = 2), or a tail of Nt − m·L slices stays fixed."""
    torch.manual_seed(levels)
    R, n, Nt, a = 3, 2, 20, 0.01
    L = 2**levels
    m = Nt // L
    rotated = torch.randn(R, n, Nt, dtype=torch.float64)
    fields = LatticeFields(
        lam=0.0,
        spacing=a,
        profile=torch.zeros(Nt, dtype=torch.float64),
        drive=torch.zeros(R, n, dtype=torch.float64),
        input_inhibition=None,
        excite=None,
        inhibit=None,
        color_bounds=((0, n),),
        shared_noise=shared,
    )
    drawn = 1 if shared else n
    words = torch.randint(-(2**31), 2**31, (2, R, drawn, m, L // 2), dtype=torch.int32)
    # Pair j of a block: the sine's normal at slice 2j, the cosine's at 2j + 1.
    noise = torch.stack(normal_box_muller(words[0], words[1], torch.float64), -1).flatten(-3)
    stage = torch.randint(-(2**31), 2**31, (2, R, drawn, m, (levels + 1) // 2), dtype=torch.int32)
    tents = bridge_tents(levels, a, torch.float64, torch.device("cpu"))
    new, accepted = bisection_blocks(rotated, fields.profile, tents, fields, [(words, stage)])
    assert int(accepted) == R * n * m
    expected = midpoint_bridge(rotated[..., : m * L], rotated[..., m * L % Nt], noise, L, a)
    torch.testing.assert_close(new[..., : m * L], expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(new[..., m * L :], rotated[..., m * L :])


@pytest.mark.slow
@pytest.mark.parametrize("linked", [False, True])
def test_the_default_moves_are_the_same_compiled_and_eager(linked: bool, monkeypatch, compiling):
    """Multilevel and cluster moves (the default algorithm) draw the same numbers compiled
    and eager, so the runs agree to rounding (float64), acceptance included."""
    network = linked_pair() if linked else RELAYS
    config = SamplerConfig(**SMALL, chains=4, thermalization=10, sweeps=20, dtype=torch.float64)
    assert set(config.moves) == {"multilevel", "cluster"}
    runs = {}
    for setting in ("0", "1"):
        monkeypatch.setenv(compiled.COMPILE_ENV, setting)
        runs[setting] = run_sampler(network.compile(config), config)
    for move in (compiled.bisection_blocks, compiled.sign_cluster_flips):
        assert not move.failed, "torch.compile was not available"
        assert move.compiled is not None, f"{move.name} did not run compiled"
    torch.testing.assert_close(runs["1"].paths, runs["0"].paths, rtol=1e-12, atol=1e-12)
    assert runs["1"].acceptance == runs["0"].acceptance


def test_the_compile_setting_names_functions_or_is_refused(monkeypatch):
    monkeypatch.setenv(compiled.COMPILE_ENV, "counter_words")
    assert compiled.counter_words.active() and not compiled.bisection_blocks.active()
    monkeypatch.setenv(compiled.COMPILE_ENV, "0")
    assert not compiled.counter_words.active()
    monkeypatch.setenv(compiled.COMPILE_ENV, "counter_words,warp_drive")
    with pytest.raises(ValueError, match="QNN_TORCH_COMPILE must be 0, 1 or names"):
        compiled.counter_words.active()
