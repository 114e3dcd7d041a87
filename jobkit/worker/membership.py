"""This worker process's membership: one id, one set of in-flight keys and one heartbeat for
as long as the process lives.

Why per process and not per channel (kombu's unit): a reconnect (Redis restarted, a failover,
a dropped connection) gives the consumer a new channel while the jobs fetched on the old one
still run. Under a new identity those jobs would look abandoned and be handed out again; under
the same identity they stay held by a live worker and are acknowledged when they finish.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from celery.worker import state as worker_state

from jobkit import keys
from jobkit.config import current_settings
from jobkit.redis_client import get_redis
from jobkit.worker.heartbeat import HeartbeatProcess, beat
from jobkit.worker.recovery import hand_back

__all__ = [
    "Identity",
    "beat_now",
    "identity",
    "join",
    "keep_beating",
    "leave",
    "process_info",
    "running",
    "send_unsent_acks",
    "unsent_acks",
    "update_info",
]


@dataclass(frozen=True)
class Identity:
    """The names of one worker process's keys in Redis (see keys.py)."""

    id: str

    @property
    def unacked_key(self) -> str:
        return keys.unacked(self.id)

    @property
    def unacked_index_key(self) -> str:
        return keys.unacked_index(self.id)

    @property
    def heartbeat_key(self) -> str:
        return keys.heartbeat(self.id)


#: What the heartbeat tells the API and dashboard about this process (set by the worker).
process_info: dict[str, Any] = {}

#: Delivery tags whose acknowledgement Redis did not take (transport.QoS.ack); sent again by
#: `send_unsent_acks` after the reconnect, and never handed back meanwhile.
unsent_acks: set[str] = set()

_lock = threading.Lock()
#: update_info's own, held while it writes to the heartbeat process: a line taken before
#: another thread's must not go out after it. Not `_lock`, which a forked pool process may
#: need (a fork while another thread holds a lock leaves it held in the child).
_info_lock = threading.Lock()
_identity: dict[int, Identity] = {}
_heartbeat: dict[int, HeartbeatProcess] = {}


def identity() -> Identity:
    """This process's identity (`hostname:pid:random`), made once per process."""
    pid = os.getpid()
    with _lock:
        if pid not in _identity:
            _identity[pid] = Identity(f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")
        return _identity[pid]


def join() -> Identity:
    """Beat once now, then keep beating from the heartbeat process; idempotent.

    The first beat is written before anything is fetched, and before the id joins the set, so
    a reaper never sees a fresh process without a heartbeat and the fetch finds it alive.
    """
    me = beat_now()
    settings = current_settings()
    info = _info()
    with _lock:
        beating = _heartbeat.get(os.getpid())
        if beating is None or beating.proc.poll() is not None:
            _heartbeat[os.getpid()] = HeartbeatProcess(
                me.id, settings.heartbeat_timeout, settings.redis_url,
                settings.sentinel_master, info)
        else:
            beating.update(info)
    return me


def beat_now() -> Identity:
    """Write this process's heartbeat now, from the worker itself."""
    me = identity()
    beat(get_redis(), me.id, current_settings().heartbeat_timeout, _info())
    return me


def keep_beating() -> None:
    """Start the heartbeat process again if it died, and tell it which jobs run now (the
    poller calls this every poll, so the Busy page sees a job start within `poll_interval`)."""
    with _lock:
        beating = _heartbeat.get(os.getpid())
    if beating is not None and beating.proc.poll() is not None:
        join()
    now_running = running()
    if now_running is not None and now_running != process_info.get("running"):
        update_info(running=now_running)


def running() -> dict[str, float] | None:
    """Delivery tag -> Unix start time of each job this process runs now: Celery's active
    requests, which a job joins when a pool slot starts it (one fetched but waiting is only
    reserved). None when the set changed while being read (the next poll reads it again)."""
    try:
        requests = list(worker_state.active_requests)
    except RuntimeError:  # changed size during iteration (the event loop's thread)
        return None
    return {str(request.message.delivery_tag): request.time_start for request in requests
            if request.time_start is not None}


def update_info(**info: Any) -> None:
    """Add to what the heartbeat shows (node, queues, concurrency, pool, start time, the
    jobs running, quiet or stopping)."""
    with _info_lock:
        process_info.update(info)
        with _lock:
            beating = _heartbeat.get(os.getpid())
        if beating is not None:
            beating.update(_info())


def _info() -> dict[str, Any]:
    return {**process_info, "hostname": socket.gethostname(), "pid": os.getpid()}


def send_unsent_acks(client: redis.Redis) -> None:
    """Write the acknowledgements a dropped connection lost (removing a job twice is harmless)."""
    tags = list(unsent_acks)
    if not tags:
        return
    me = identity()
    with client.pipeline() as pipe:
        pipe.hdel(me.unacked_key, *tags)
        pipe.zrem(me.unacked_index_key, *tags)
        pipe.execute()
    unsent_acks.difference_update(tags)


def leave() -> int:
    """A clean stop, once nothing runs any more: stop beating, put back every job still held
    (fetched but never started), and leave the set. Returns how many went back."""
    with _lock:
        beating = _heartbeat.pop(os.getpid(), None)
        me = _identity.get(os.getpid())
    if beating is not None:
        beating.stop()
    if me is None:
        return 0
    client = get_redis()
    send_unsent_acks(client)
    client.delete(me.heartbeat_key)
    return hand_back(me.id)
