"""Train a quantum MLP on MNIST through its twin, then test it by Monte Carlo.

The same command as ``qnn-train-quantum-mlp``; its logic lives in
:mod:`training.train_quantum_mlp`, and ``--help`` lists the options. Run from a
checkout, it also takes MNIST from ``../shared/data`` beside the checkout when that folder
exists (this project's machines have no internet): see ``--mnist_mirror``.
"""

import sys

from training.data import use_mirror_beside_checkout
from training.train_quantum_mlp import main

if __name__ == "__main__":
    use_mirror_beside_checkout(__file__)
    sys.exit(main())
