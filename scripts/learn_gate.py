"""Learn a paper gate's strengths from its truth table by gradient descent through the sampler.

The same command as ``qnn-learn-gate``; its logic lives in
:mod:`qnn_torch.experiments.learn_gate`, and ``--help`` lists the options.
"""

import sys

from qnn_torch.experiments.learn_gate import main

if __name__ == "__main__":
    sys.exit(main())
