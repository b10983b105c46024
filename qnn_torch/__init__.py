"""qnn_torch: neural networks of quantum double-well neurons, by path-integral Monte Carlo."""

__version__ = "0.2.0"

from qnn_torch import circuits, learning
from qnn_torch.autograd import grad_with_stderr
from qnn_torch.circuits import THRESHOLDS, Thresholds, add_input_grid, conv_layer
from qnn_torch.config import SamplerConfig
from qnn_torch.functional.layer import normalize_weights
from qnn_torch.functional.mean_field import MeanFieldWarning
from qnn_torch.functional.physics import kink_action, kink_path
from qnn_torch.learning import learn_truth_table, verify_truth_table
from qnn_torch.module.layer import QuantumNeuronLayer
from qnn_torch.module.mlp import QuantumMLP
from qnn_torch.network import Network
from qnn_torch.simulate import (
    ColdStartWarning,
    FewChainsWarning,
    SimulationResult,
    StuckChainWarning,
    simulate,
)

__all__ = [
    "THRESHOLDS",
    "ColdStartWarning",
    "FewChainsWarning",
    "MeanFieldWarning",
    "Network",
    "QuantumMLP",
    "QuantumNeuronLayer",
    "SamplerConfig",
    "SimulationResult",
    "StuckChainWarning",
    "Thresholds",
    "__version__",
    "add_input_grid",
    "circuits",
    "conv_layer",
    "grad_with_stderr",
    "kink_action",
    "kink_path",
    "learn_truth_table",
    "learning",
    "normalize_weights",
    "simulate",
    "verify_truth_table",
]
