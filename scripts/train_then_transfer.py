"""Train the classical twin on MNIST, transfer its weights to quantum neurons, compare both.

The command line and the logic live in
:mod:`training.train_then_transfer`; ``--help`` lists the options.
"""

import sys

from training.train_then_transfer import main

if __name__ == "__main__":
    sys.exit(main())
