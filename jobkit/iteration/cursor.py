"""An iterable job's progress in Redis: its cursor, saved as it goes, then a finished mark.

One string per job id (keys.iteration), written only here: ``{"cursor": ...}`` while the job
is under way, ``{"finished": true}`` once every item is done. The mark, not a DEL, ends the
job: a worker killed after the last item but before its acknowledgement has the message put
back in its queue (worker/recovery.py), and that run finds the mark and does nothing instead
of starting over. Every write renews the TTL, so the key of a job that is never run again
goes by itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import redis

from jobkit import keys
from jobkit.redis_client import get_redis

__all__ = ["FINISHED_SECONDS", "Saved", "encode", "finish", "load", "save"]

#: How long the finished mark is kept (at most the job's cursor_ttl).
FINISHED_SECONDS = 86400.0


@dataclass(frozen=True, slots=True)
class Saved:
    cursor: Any
    finished: bool


def encode(cursor: Any, whose: str) -> str:
    """The cursor as JSON; TypeError naming `whose` (the job) when it is not JSON data."""
    try:
        return json.dumps({"cursor": cursor}, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{whose}: the cursor {cursor!r:.80} cannot be saved: it must be JSON "
                        f"data (str, int, float, bool, None, lists and dicts of them): {exc}"
                        ) from None


def load(job_id: str) -> Saved | None:
    """What a previous run of this job saved, or None (a first run, or the key expired)."""
    key = keys.iteration(job_id)
    try:
        raw = get_redis().get(key)
    except redis.ResponseError as exc:  # WRONGTYPE: something else wrote a hash or a list there
        if not str(exc).startswith("WRONGTYPE"):
            raise
        raise ValueError(f"{key} is not a string, so not a saved cursor; delete the key to "
                         "start the job over") from None
    if raw is None:
        return None
    try:
        state = json.loads(raw)
    except ValueError:
        state = None
    if isinstance(state, dict) and state.get("finished") is True:
        return Saved(None, True)
    if not (isinstance(state, dict) and "cursor" in state):
        raise ValueError(f"{key} holds {raw!r:.80}, not a saved cursor; "
                         "delete the key to start the job over")
    return Saved(state["cursor"], False)


def save(job_id: str, encoded: str, ttl: float) -> None:
    get_redis().set(keys.iteration(job_id), encoded, px=_ms(ttl))


def finish(job_id: str, ttl: float) -> None:
    get_redis().set(keys.iteration(job_id), '{"finished":true}',
                    px=_ms(min(ttl, FINISHED_SECONDS)))


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
