"""Jobs the periodic-job tests schedule: each run is recorded in Redis with its tick."""

from __future__ import annotations

import json
import os

from jobkit import Job
from jobkit.redis_client import get_redis

RUNS = "periodic-test:runs"


class TickJob(Job):
    """Records its tick (passed by `date_as_argument`), when it was enqueued and by whom."""

    queue_as = "periodic_test"

    def perform(self, tick: float) -> None:
        enqueued = self.enqueued_at.timestamp() if self.enqueued_at else None
        get_redis().rpush(RUNS, json.dumps({"tick": tick, "enqueued_at": enqueued,
                                            "pid": os.getpid()}))


class ReportJob(Job):
    queue_as = "periodic_test"

    def perform(self, *args: object) -> None:
        get_redis().rpush(RUNS, json.dumps({"args": list(args)}))
