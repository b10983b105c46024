"""How well the mean field describes a quantum MLP, and what its Monte Carlo costs.

The same command as ``qnn-benchmark-mlp``; its logic lives in
:mod:`qnn_torch.experiments.benchmark_mlp`, and ``--help`` lists the options.
"""

import sys

from qnn_torch.experiments.benchmark_mlp import main

if __name__ == "__main__":
    sys.exit(main())
