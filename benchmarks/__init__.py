"""Measurements that are too long or too noisy for the test suite (run: make bench)."""
