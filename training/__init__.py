"""Train-then-transfer on MNIST: classical twin, weight transfer and quantum evaluation."""

from training.classical import ClassicalTwin
from training.data import MNIST_FILES, MNISTDataModule, copy_offline_mnist, ensure_mnist
from training.finetune import FINETUNE_CONFIG, QuantumClassifier
from training.quantum import IndexedBatches, QuantumEvaluator, quantum_loader
from training.transfer import DEFAULT_COUPLING_SCALE, shift_per_pixel, transfer, transferred_weight

__all__ = [
    "DEFAULT_COUPLING_SCALE",
    "FINETUNE_CONFIG",
    "MNIST_FILES",
    "ClassicalTwin",
    "IndexedBatches",
    "MNISTDataModule",
    "QuantumClassifier",
    "QuantumEvaluator",
    "copy_offline_mnist",
    "ensure_mnist",
    "quantum_loader",
    "shift_per_pixel",
    "transfer",
    "transferred_weight",
]
