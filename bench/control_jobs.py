"""The jobs of bench/controls.py, importable by ``jobkit worker`` as `bench.control_jobs`.

Every class is the same no-op job taking one number, so the only difference measured is its
control (jobkit.controls, jobkit.limiter):

* `PlainJob`: no control (the baseline).
* `UniqueJob`: ``unique_for`` an hour, ``unique_until = "success"`` (the default): one lock
  script at enqueue, one lock release after each successful run. Its key is the class and
  the arguments, so distinct numbers are distinct keys, and the same number is a duplicate.
* `DebouncedJob`: ``debounce = Debounce(within=3600)`` by the arguments: one script at enqueue,
  the job is parked in the scheduled set until its window ends (so it is only enqueued here).
* `ConcurrencyJob`: ``limits_concurrency = Concurrency(to=1000)`` over `CONCURRENCY_KEYS` keys
  (the number modulo 8): never at its limit, so each run costs the admit and release scripts
  and nothing is held.
* `HeldJob`: ``Concurrency(to=1)`` on one key (the class's own): every job but the running one
  is held, and each release promotes the next.
* `LimitedJob`: class option ``limiter = jobkit.limiter.bucket(..., 1_000_000, "second")``:
  never over its limit, so each run costs one acquire script.
"""

from __future__ import annotations

from jobkit import Concurrency, Debounce, Job, limiter

__all__ = ["CONCURRENCY_KEYS", "ConcurrencyJob", "DebouncedJob", "HeldJob", "LimitedJob",
           "PlainJob", "UniqueJob"]

CONCURRENCY_KEYS = 8
BUCKET_NAME = "bench-controls"


class PlainJob(Job):
    def perform(self, n: int) -> None:
        pass


class UniqueJob(Job):
    unique_for = 3600

    def perform(self, n: int) -> None:
        pass


class DebouncedJob(Job):
    debounce = Debounce(within=3600)

    def perform(self, n: int) -> None:
        pass


class ConcurrencyJob(Job):
    limits_concurrency = Concurrency(to=1000, key=lambda job: job.arguments[0] % CONCURRENCY_KEYS)

    def perform(self, n: int) -> None:
        pass


class HeldJob(Job):
    limits_concurrency = Concurrency(to=1)

    def perform(self, n: int) -> None:
        pass


class LimitedJob(Job):
    limiter = limiter.bucket(BUCKET_NAME, 1_000_000, "second")

    def perform(self, n: int) -> None:
        pass
