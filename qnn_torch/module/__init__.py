"""nn.Module wrappers around the functional core."""

from qnn_torch.module.layer import QuantumNeuronLayer

__all__ = ["QuantumNeuronLayer"]
