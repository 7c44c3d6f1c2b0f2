"""Benchmarks: run as scripts (``python -m bench.members``), never collected by pytest or CI."""
