"""Batches: a group of jobs with callbacks when all succeeded, all finished, or one died.

`jobkit.Batch` (batch.py) is the public face; `scope.py` collects the jobs a batch's block
enqueues and sends them in chunks; `state.py` is the one writer of a batch's Redis state (each
change one Lua script, callbacks pushed in the same step); `memory.py` is the same state in
memory for the test modes. docs/batches.md.

This package's `__init__` imports nothing: `job.py` imports `scope`, and `batch.py` imports
`job`.
"""
