"""Out-of-distribution detection and its data: the OOD sets a run is evaluated against."""
