"""Distribution shift: corrupted test sets ("-C" benchmarks) and their evaluation."""
