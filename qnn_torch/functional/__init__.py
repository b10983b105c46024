"""Functional core: pure tensor functions for the physics, the moves and the statistics."""

from qnn_torch.functional.exact import (
    driven_pair_reference,
    single_neuron_profile,
    single_neuron_reference,
    two_neuron_reference,
)
from qnn_torch.functional.observables import (
    autocorrelation,
    chain_mean_and_error,
    integrated_autocorrelation_time,
)
from qnn_torch.functional.physics import (
    action_density,
    brightness_path,
    double_well,
    excitation_energy,
    inhibition_energy,
    kink_action,
    kink_path,
    local_potential,
    network_action,
    spike_profile,
)
from qnn_torch.functional.sampler import (
    bisection_pass,
    local_half_sweep,
    local_sweep,
    sign_cluster_move,
)

__all__ = [
    "action_density",
    "autocorrelation",
    "bisection_pass",
    "brightness_path",
    "chain_mean_and_error",
    "double_well",
    "driven_pair_reference",
    "excitation_energy",
    "inhibition_energy",
    "integrated_autocorrelation_time",
    "kink_action",
    "kink_path",
    "local_half_sweep",
    "local_potential",
    "local_sweep",
    "network_action",
    "sign_cluster_move",
    "single_neuron_profile",
    "single_neuron_reference",
    "spike_profile",
    "two_neuron_reference",
]
