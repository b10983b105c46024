"""Quantum MNIST accuracy against the coupling scale k, the sweeps and the chains.

The command line and the logic live in :mod:`training.accuracy_curve`; ``--help`` lists
the options.
"""

import sys

from training.accuracy_curve import main

if __name__ == "__main__":
    sys.exit(main())
