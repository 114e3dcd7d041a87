"""Controls on when a job runs: unique jobs, concurrency limits and debounce (rate limiters
are `jobkit.limiter`). docs/controls.md is the user's guide; each module says why it is
built the way it is.

- `options`: the class options and the `controls` each job's payload carries;
- `enqueue`: the unique and debounced pushes (one Lua script each, with the push);
- `unique`: releasing a unique lock;
- `concurrency`: slots and held jobs, admitted by the worker's transport;
- `read`: the controls as people read them (`jobkit.api`, the dashboard).
"""

from jobkit.controls.options import Concurrency, Debounce

__all__ = ["Concurrency", "Debounce"]
