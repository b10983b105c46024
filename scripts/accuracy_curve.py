"""Quantum MNIST accuracy against the coupling scale k, the sweeps and the chains.

The same command as ``qnn-accuracy-curve``; its logic lives in
:mod:`training.accuracy_curve`, and ``--help`` lists the options. Run from a checkout, it
also takes MNIST from ``../shared/data`` beside the checkout when that folder exists.
"""

import os
import sys
from pathlib import Path

from training.accuracy_curve import main
from training.data import MIRROR_ENV

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data"

if __name__ == "__main__":
    if (SHARED_MNIST / "MNIST" / "raw").is_dir():
        os.environ.setdefault(MIRROR_ENV, str(SHARED_MNIST))
    sys.exit(main())
