"""Reproduce the circuits of Dorozhinsky & Pavlovsky (arXiv:1806.09664): figures and tables.

The command line and the logic live in
:mod:`qnn_torch.reproduce_paper`; ``--help`` lists the options.
"""

import sys

from qnn_torch.reproduce_paper import main

if __name__ == "__main__":
    sys.exit(main())
