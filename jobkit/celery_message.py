"""The Celery (protocol 2) message for a job payload, built directly.

Why not `Task.apply_async`: it costs ~400 us of Python per call (bench/enqueue_perform.py
compares), most of it generic routing, signal and option handling a job does not use. The
worker cannot tell the difference: this is the same envelope kombu's Redis transport pushes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from typing import Any

from jobkit.display import REPR_LIMIT, task_reprs
from jobkit.keys import MAX_PRIORITY, MIN_PRIORITY, list_key

__all__ = ["build_message", "build_task_message", "encode", "job_envelope", "read_task_args",
           "task_body", "task_envelope"]

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def build_message(payload: dict[str, Any], task_id: str) -> tuple[str, str]:
    """(Redis list key, message JSON) for a payload, as kombu would LPUSH it."""
    key, message = job_envelope(payload, task_id)
    return key, encode(message, [[payload], {}, _EMBED])


def job_envelope(payload: dict[str, Any], task_id: str) -> tuple[str, dict[str, Any]]:
    """`task_envelope` for a payload: its body is ``task_body([payload])``; its ``argsrepr``
    and ``kwargsrepr`` (Flower) the arguments as jobkit.display shows them
    (a mail as ``UserMailer#welcome(User(42))``)."""
    argsrepr, kwargsrepr = task_reprs(payload)
    controls = payload.get("controls")
    soft, hard = payload.get("time_limits") or (None, None)
    if payload.get("awaits"):  # jobkit enforces an async job's soft limit (coroutines.py)
        soft = None
    return task_envelope(
        payload["job_class"], task_id, payload["queue_name"], payload["priority"],
        retries=payload["executions"], job_id=payload["job_id"],
        argsrepr=argsrepr, kwargsrepr=kwargsrepr,
        concurrency=controls.get("concurrency") if isinstance(controls, dict) else None,
        time_limits=(hard, soft),
    )


def build_task_message(task: str, task_id: str, args: list, queue: str, priority: int | None,
                       retries: int = 0, job_id: str | None = None, argsrepr: str = "",
                       kwargsrepr: str = "", concurrency: dict[str, Any] | None = None,
                       time_limits: tuple[float | None, float | None] = (None, None)
                       ) -> tuple[str, str]:
    """The same for any task arguments: used to keep a message whose payload is unreadable.
    `concurrency` (a job's concurrency control) becomes the ``jobkit_concurrency`` header,
    which the worker's transport reads before Celery takes the job; `time_limits` (hard, soft)
    is Celery's ``timelimit`` header, which its prefork pool enforces."""
    key, message = task_envelope(task, task_id, queue, priority, retries, job_id, argsrepr,
                                 kwargsrepr, concurrency, time_limits)
    return key, encode(message, [args, {}, _EMBED])


def task_envelope(task: str, task_id: str, queue: str, priority: int | None,
                  retries: int = 0, job_id: str | None = None, argsrepr: str = "",
                  kwargsrepr: str = "", concurrency: dict[str, Any] | None = None,
                  time_limits: tuple[float | None, float | None] = (None, None)
                  ) -> tuple[str, dict[str, Any]]:
    """(Redis list key, the message without its body): its ``headers`` and ``properties``
    dicts can still change (the publish signals, jobkit.publish_signals) before `encode`."""
    priority = min(max(priority or 0, MIN_PRIORITY), MAX_PRIORITY)
    message = {
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": retries,
            "timelimit": list(time_limits),
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": argsrepr[:REPR_LIMIT],
            "kwargsrepr": kwargsrepr[:REPR_LIMIT],
            "origin": _ORIGIN,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
            "job_id": job_id,
            **({"jobkit_concurrency": concurrency} if concurrency else {}),
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": task_id,  # unique per message already
        },
    }
    return list_key(queue, priority), message


def task_body(args: list) -> tuple[list, dict[str, Any], dict[str, Any]]:
    """The body of a task message with these positional arguments, as Celery's protocol 2
    has it: (args, kwargs, embed)."""
    return args, {}, dict(_EMBED)


def encode(message: dict[str, Any], body: list | tuple) -> str:
    """A message from `task_envelope` with its body, as the JSON kombu would LPUSH."""
    message["body"] = base64.b64encode(_dumps(body).encode()).decode("ascii")
    return _dumps(message)


def read_task_args(message: str | bytes) -> list:
    """The task's positional arguments inside a stored message (for a job: [payload]);
    ValueError when the message cannot be read."""
    try:
        envelope = json.loads(message)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a task message: {exc!r}") from exc
    if not isinstance(args, list):
        raise ValueError("task arguments are not a list")
    return args
