"""Reproduce the circuits of Dorozhinsky & Pavlovsky (arXiv:1806.09664): figures and tables.

The same command as ``qnn-reproduce-paper``; its logic lives in
:mod:`qnn_torch.experiments.reproduce_paper`, and ``--help`` lists the options.
"""

import sys

from qnn_torch.experiments.reproduce_paper import main

if __name__ == "__main__":
    sys.exit(main())
