"""One run, from its configuration to a finished run folder: build, train (with the
learning-rate search), evaluate."""
