"""Train a quantum MLP on MNIST through its twin, then test it by Monte Carlo.

The same command as ``qnn-train-quantum-mlp``; its logic lives in
:mod:`training.train_quantum_mlp`, and ``--help`` lists the options. Run from a
checkout, it also takes MNIST from ``../shared/data`` beside the checkout when that folder
exists (this project's machines have no internet): see ``--mnist_mirror``.
"""

import os
import sys
from pathlib import Path

from training.data import MIRROR_ENV
from training.train_quantum_mlp import main

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data"

if __name__ == "__main__":
    if (SHARED_MNIST / "MNIST" / "raw").is_dir():
        os.environ.setdefault(MIRROR_ENV, str(SHARED_MNIST))
    sys.exit(main())
