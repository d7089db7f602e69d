"""The ``sabma`` command line."""
