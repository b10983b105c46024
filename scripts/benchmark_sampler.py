"""Throughput and efficiency of the sampler's moves at the paper's lattice.

The command line and the logic live in
:mod:`qnn_torch.benchmark_sampler`; ``--help`` lists the options.
"""

import sys

from qnn_torch.benchmark_sampler import main

if __name__ == "__main__":
    sys.exit(main())
