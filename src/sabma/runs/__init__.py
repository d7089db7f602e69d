"""Run directories: atomic files, saved posteriors, reports."""
