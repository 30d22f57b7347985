"""Thin absl entry points, one per stage: `python -m stages.<name> --help`."""
