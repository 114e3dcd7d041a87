"""Heartbeats of consuming worker processes, and recovery of a dead one's in-flight jobs.

Why our own: kombu keeps every delivered message in one shared `unacked` hash and puts it back
only after `visibility_timeout` (an hour by default), whoever holds it, so a worker killed with
-9 leaves its jobs invisible for an hour, and a live worker's long job is handed out twice.
jobkit gives each consuming channel its own in-flight keys (see transport.py), a heartbeat key
with a TTL, and lets any worker's poller put back the in-flight jobs of a process whose heartbeat
has expired, within `heartbeat_timeout` plus one poll.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from typing import Any

import redis

from jobkit.queues import WAKE_TOKENS_MAX, list_key, wake_key
from jobkit.redis_client import get_redis

__all__ = ["ConsumerIdentity", "process_info", "reap_dead_processes", "register"]

logger = logging.getLogger(__name__)

PROCESSES_KEY = "jobkit:processes"
HEARTBEAT_EVERY_SECONDS = 2.0
REAP_LOCK_SECONDS = 60


class ConsumerIdentity:
    """The names of one consuming channel's keys in Redis."""

    def __init__(self) -> None:
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.unacked_key = f"jobkit:unacked:{self.id}"
        self.unacked_index_key = f"jobkit:unacked_index:{self.id}"
        self.unacked_mutex_key = f"jobkit:unacked_mutex:{self.id}"
        self.heartbeat_key = heartbeat_key(self.id)


def heartbeat_key(process_id: str) -> str:
    return f"jobkit:heartbeat:{process_id}"


#: What the heartbeat tells the API and dashboard about this process (set by the worker).
process_info: dict[str, Any] = {}

_live: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_lock = threading.Lock()
_thread: list[threading.Thread] = []


def register(identity: ConsumerIdentity, owner: Any, ttl: float) -> None:
    """Start beating for a consuming channel (`owner`), then announce it.

    The heartbeat is written before the id joins the set, so a reaper never sees a fresh
    process without a heartbeat.
    """
    _beat(get_redis(), identity, ttl)
    with _lock:
        _live[identity.id] = owner
        if not _thread or not _thread[0].is_alive():
            _thread[:] = [threading.Thread(target=_beat_forever, args=(ttl,),
                                           name="jobkit-heartbeat", daemon=True)]
            _thread[0].start()


def unregister(identity: ConsumerIdentity) -> None:
    """A clean stop: put back whatever kombu did not, then leave the set."""
    with _lock:
        _live.pop(identity.id, None)
    client = get_redis()
    _restore_process(client, identity.id)
    client.delete(identity.heartbeat_key)


def _beat(client: redis.Redis, identity: ConsumerIdentity, ttl: float) -> None:
    """Refresh the heartbeat, then (re)join the set: a Redis that lost its data (restart
    without persistence, FLUSHDB) learns about this process again at the next beat."""
    info = {**process_info, "id": identity.id, "pid": os.getpid(),
            "hostname": socket.gethostname(), "beat_at": time.time()}
    with client.pipeline() as pipe:
        pipe.set(identity.heartbeat_key, json.dumps(info), px=int(ttl * 1000))
        pipe.sadd(PROCESSES_KEY, identity.id)
        pipe.execute()


def _beat_forever(ttl: float) -> None:
    while True:
        time.sleep(min(HEARTBEAT_EVERY_SECONDS, ttl / 3))
        with _lock:
            owners = {pid: owner for pid, owner in _live.items()}
        if not owners:
            continue
        try:
            client = get_redis()
            for owner in owners.values():
                _beat(client, owner.jobkit_identity, ttl)
        except redis.RedisError as exc:
            logger.warning("jobkit heartbeat failed, will try again: %s", exc)
        except Exception:  # a dead heartbeat thread would get this live worker reaped
            logger.exception("jobkit heartbeat failed, will try again")


def reap_dead_processes(client: redis.Redis | None = None) -> int:
    """Put back the in-flight jobs of every process whose heartbeat expired; returns how many.

    Each message moves in its own WATCH/MULTI transaction (read, remove, push to the front of
    its queue), so two reapers cannot both restore it and a crash leaves it in one place.
    """
    client = client or get_redis()
    ids = [i.decode() if isinstance(i, bytes) else i for i in client.smembers(PROCESSES_KEY)]
    if not ids:
        return 0
    with client.pipeline(transaction=False) as pipe:
        for process_id in ids:
            pipe.exists(heartbeat_key(process_id))
        alive = pipe.execute()
    restored = 0
    for process_id, is_alive in zip(ids, alive, strict=True):
        if not is_alive and client.set(f"jobkit:reaping:{process_id}", "1", nx=True,
                                       ex=REAP_LOCK_SECONDS):
            restored += _restore_process(client, process_id)
    return restored


def _restore_process(client: redis.Redis, process_id: str) -> int:
    unacked = f"jobkit:unacked:{process_id}"
    index = f"jobkit:unacked_index:{process_id}"
    restored = 0
    for tag in client.hkeys(unacked):
        restored += client.transaction(lambda pipe, tag=tag: _restore_one(pipe, unacked, index,
                                                                           tag), unacked,
                                       value_from_callable=True) or 0
    with client.pipeline() as pipe:
        pipe.delete(unacked, index, f"jobkit:unacked_mutex:{process_id}")
        pipe.srem(PROCESSES_KEY, process_id)
        pipe.execute()
    if restored:
        logger.warning("jobkit: process %s stopped beating; %d in-flight jobs put back in "
                       "their queues", process_id, restored)
    return restored


def _restore_one(pipe: redis.client.Pipeline, unacked: str, index: str, tag: bytes) -> int:
    raw = pipe.hget(unacked, tag)
    pipe.multi()
    pipe.hdel(unacked, tag)
    pipe.zrem(index, tag)
    if raw is None:
        return 0
    message, _exchange, routing_key = json.loads(raw)
    message.setdefault("headers", {})["redelivered"] = True
    message["properties"].setdefault("delivery_info", {})["redelivered"] = True
    key = list_key(routing_key, message["properties"].get("priority"))
    pipe.rpush(key, json.dumps(message))  # the front of the line, as kombu restores
    pipe.lpush(wake_key(routing_key), "1")
    pipe.ltrim(wake_key(routing_key), 0, WAKE_TOKENS_MAX - 1)
    return 1
