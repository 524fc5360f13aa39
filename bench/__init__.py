"""Benchmarks (not tests): each module with a ``main() -> dict`` prints a table.

Run them all with ``make bench`` (``python -m bench``); results land in
bench/results/latest.json.
"""
