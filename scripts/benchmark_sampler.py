"""Throughput and efficiency of the sampler's moves at the paper's lattice.

The same command as ``qnn-benchmark-sampler``; its logic lives in
:mod:`qnn_torch.experiments.benchmark_sampler`, and ``--help`` lists the options.
"""

import sys

from qnn_torch.experiments.benchmark_sampler import main

if __name__ == "__main__":
    sys.exit(main())
