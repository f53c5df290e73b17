"""Benchmarks: scripts that print tables (run from the checkout: `python -m benchmarks.NAME`)."""
