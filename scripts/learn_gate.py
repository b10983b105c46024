"""Learn a paper gate's strengths from its truth table by gradient descent through the sampler

The command line and the logic live in
:mod:`qnn_torch.learn_gate`; ``--help`` lists the options.
"""

import sys

from qnn_torch.learn_gate import main

if __name__ == "__main__":
    sys.exit(main())
