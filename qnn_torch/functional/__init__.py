"""Functional core: pure tensor functions for the physics, the moves and the statistics."""

from qnn_torch.functional.exact import (
    driven_pair_reference,
    single_neuron_activity,
    single_neuron_profile,
    single_neuron_reference,
    two_neuron_reference,
)
from qnn_torch.functional.observables import (
    autocorrelation,
    chain_mean_and_error,
    gap_in_sigmas,
    integrated_autocorrelation_time,
)
from qnn_torch.functional.physics import (
    action_density,
    double_well,
    excitation_energy,
    inhibition_energy,
    kink_action,
    kink_path,
    network_action,
    potential_sum,
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
    "chain_mean_and_error",
    "double_well",
    "driven_pair_reference",
    "excitation_energy",
    "gap_in_sigmas",
    "inhibition_energy",
    "integrated_autocorrelation_time",
    "kink_action",
    "kink_path",
    "local_half_sweep",
    "local_sweep",
    "network_action",
    "potential_sum",
    "sign_cluster_move",
    "single_neuron_activity",
    "single_neuron_profile",
    "single_neuron_reference",
    "spike_profile",
    "two_neuron_reference",
]
