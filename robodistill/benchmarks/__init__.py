"""Benchmark suites for `scripts/bench.py <suite>`: each returns a JSON-able dict and a printable table."""
