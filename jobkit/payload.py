"""The job payload: the one dict that crosses the broker, built and parsed here only.

    {"v": 1, "job_class": "app.jobs.TaskLoggerJob", "job_id": "...", "queue_name": "default",
     "priority": null, "args": [...], "kwargs": {...}, "executions": 0,
     "enqueued_at": 1732370000.25, "scheduled_at": null}

plus, only when set, "controls" (unique / concurrency / debounce keys, jobkit.controls),
"over_limit" (times a rate limiter sent the job back to wait), "time_limits" ([soft, hard]
seconds), "awaits" (`perform` is `async def`) and "batch" (the id of its jobkit.Batch).

Arguments are stored serialized (see arguments.py); times are Unix seconds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from jobkit.errors import PayloadError
from jobkit.time_limits import time_limits

__all__ = ["PAYLOAD_VERSION", "Payload", "from_timestamp", "to_timestamp"]

PAYLOAD_VERSION = 1


@dataclass(slots=True)
class Payload:
    job_class: str
    job_id: str
    queue_name: str
    priority: int | None
    args: list[Any]
    kwargs: dict[str, Any]
    executions: int
    enqueued_at: float | None
    scheduled_at: float | None
    #: Unique, concurrency and debounce keys of the job (jobkit.controls), when it has any.
    controls: dict[str, Any] | None = None
    #: How many times a rate limiter sent the job back to wait (not retries).
    over_limit: int = 0
    #: [time_limit, hard_time_limit] in seconds (each may be None), when either is set.
    time_limits: list[float | None] | None = None
    #: `perform` is `async def`: jobkit, not Celery's pool, enforces its soft time limit.
    awaits: bool = False
    #: The id of the batch the job belongs to (jobkit.batch), when it is in one.
    batch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": PAYLOAD_VERSION,
            "job_class": self.job_class,
            "job_id": self.job_id,
            "queue_name": self.queue_name,
            "priority": self.priority,
            "args": self.args,
            "kwargs": self.kwargs,
            "executions": self.executions,
            "enqueued_at": self.enqueued_at,
            "scheduled_at": self.scheduled_at,
            **({"controls": self.controls} if self.controls else {}),
            **({"over_limit": self.over_limit} if self.over_limit else {}),
            **({"time_limits": self.time_limits} if self.time_limits else {}),
            **({"awaits": True} if self.awaits else {}),
            **({"batch": self.batch} if self.batch else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Payload:
        """Check the shape of a received payload; PayloadError says what is wrong."""
        if not isinstance(data, dict):
            raise PayloadError(f"payload must be an object, got {type(data).__name__}")
        if data.get("v") != PAYLOAD_VERSION:
            raise PayloadError(f"unsupported payload version {data.get('v')!r}")
        for key, kinds in _SHAPE.items():
            if not isinstance(data.get(key), kinds):
                raise PayloadError(f"payload field {key!r} is missing or of the wrong type")
        fields: dict[str, Any] = {key: data.get(key) for key in _SHAPE}  # checked just above
        for key, (kinds, default) in _OPTIONAL.items():
            value = data.get(key, default)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise PayloadError(f"payload field {key!r} is of the wrong type")
            fields[key] = value
        limits = data.get("time_limits")
        if limits is not None:
            if not (isinstance(limits, list) and len(limits) == 2):
                raise PayloadError("payload field 'time_limits' is not [soft, hard] seconds")
            fields["time_limits"] = list(time_limits(limits[0], limits[1], PayloadError,
                                                     "payload's "))
        return cls(**fields)


_NUMBER_OR_NONE = (int, float, type(None))
_SHAPE: dict[str, tuple[type, ...]] = {
    "job_class": (str,),
    "job_id": (str,),
    "queue_name": (str,),
    "priority": (int, type(None)),
    "args": (list,),
    "kwargs": (dict,),
    "executions": (int,),
    "enqueued_at": _NUMBER_OR_NONE,
    "scheduled_at": _NUMBER_OR_NONE,
}

_OPTIONAL: dict[str, tuple[tuple[type, ...], Any]] = {
    "controls": ((dict, type(None)), None),
    "over_limit": ((int,), 0),
    "awaits": ((bool,), False),
    "batch": ((str, type(None)), None),
}


def to_timestamp(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def from_timestamp(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)
