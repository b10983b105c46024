"""No silent wrong answers: bad inputs are refused early, untrustworthy results look so."""

from __future__ import annotations

import torch

from qnn_torch import Network, SamplerConfig, simulate
from qnn_torch.functional.physics import double_well

from .conftest import SMALL

QUICK = {**SMALL, "chains": 4, "thermalization": 20, "sweeps": 40, "seed": 5}


def relay(strength: float | torch.Tensor) -> Network:
    return Network().add_input("x").add_neuron("y").excite("x", "y", strength)


# -- 6. the recorded potential profile is V0 of the paths -------------------------------------
def test_potential_profile_is_the_double_well_of_the_paths():
    config = SamplerConfig(**{**QUICK, "sweeps": 1}, dtype=torch.float64)
    result = simulate(relay(120.0), config, record_profile=True)
    expected = double_well(result.paths, config.lam).mean(0)  # one sweep: the last paths
    torch.testing.assert_close(result.potential_profile, expected, rtol=1e-12, atol=0)
