"""Quantum MNIST accuracy against the coupling scale k, the sweeps and the chains.

The same command as ``qnn-accuracy-curve``; its logic lives in
:mod:`training.accuracy_curve`, and ``--help`` lists the options. Run from a checkout, it
also takes MNIST from ``../shared/data`` beside the checkout when that folder exists.
"""

import sys

from training.accuracy_curve import main
from training.data import use_mirror_beside_checkout

if __name__ == "__main__":
    use_mirror_beside_checkout(__file__)
    sys.exit(main())
