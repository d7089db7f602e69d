"""Small end-to-end examples that run in seconds on a CPU."""
