"""Benchmarks: `python bench/enqueue_perform.py` (see its docstring)."""
