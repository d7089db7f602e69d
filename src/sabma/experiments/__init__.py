"""Experiments on top of runs: the benchmark, the demos and the frozen-feature probe."""
