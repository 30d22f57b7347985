"""Benchmarks, run by hand (`python -m benchmarks.<name>`); each prints its figures last."""
