"""Experiments, benchmarks and their command lines, apart from the core library.

``reproduce_paper`` (the paper's circuits), ``learn_gate`` (learning a gate's strengths)
and ``benchmark_sampler`` (the sampler's speed) run as ``qnn-reproduce-paper``,
``qnn-learn-gate`` and ``qnn-benchmark-sampler`` or from ``scripts/``. They draw figures
with matplotlib and parse command lines with jsonargparse (:mod:`.cli`); importing
``qnn_torch`` imports neither.
"""
