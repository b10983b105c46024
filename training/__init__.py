"""MNIST jobs: train-then-transfer (classical twin, weight transfer, quantum evaluation) and
the quantum MLP trained through its twin."""

from training.classical import ClassicalMLP, ClassicalTwin
from training.data import MNIST_FILES, MNISTDataModule, copy_offline_mnist, ensure_mnist
from training.finetune import FINETUNE_CONFIG, QuantumClassifier
from training.quantum import IndexedBatches, QuantumEvaluator, quantum_loader
from training.quantum_mlp import QuantumMLPClassifier
from training.transfer import DEFAULT_COUPLING_SCALE, shift_per_pixel, transfer, transferred_weight

__all__ = [
    "DEFAULT_COUPLING_SCALE",
    "FINETUNE_CONFIG",
    "MNIST_FILES",
    "ClassicalMLP",
    "ClassicalTwin",
    "IndexedBatches",
    "MNISTDataModule",
    "QuantumClassifier",
    "QuantumEvaluator",
    "QuantumMLPClassifier",
    "copy_offline_mnist",
    "ensure_mnist",
    "quantum_loader",
    "shift_per_pixel",
    "transfer",
    "transferred_weight",
]
