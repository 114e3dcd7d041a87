"""`GET /status.json`: is the job service working? In the shape of Shirasagi Job's status.

`status` is "stuck" (HTTP 503; spelled "stucked", as Shirasagi does, with `web: stuck_status:
stucked`) when no worker process is alive, when a queue's next job has waited longer than
`stuck_after` seconds (web: stuck_after in config, default 300), or when a non-empty queue has
no live worker consuming it; otherwise "ok" (HTTP 200). `notice.notices` says what to check.
Redis unreachable is a 503 too, answered by jobkit.web's error path (with a `redis` member).
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from typing import Any

from jobkit import api
from jobkit.config import current_settings
from jobkit.on_demand import SLOT_SECONDS
from jobkit.web.http import Request, Response
from jobkit.web.routes import router

DEFAULT_STUCK_AFTER_SECONDS = 300.0
STUCK = "stuck"


def stuck_word() -> str:
    """The status when the service is stuck: `web: stuck_status` (validated at load)."""
    return current_settings().web.get("stuck_status", STUCK)


def service_status() -> tuple[bool, dict[str, Any]]:
    settings = current_settings()
    stuck_after = float(settings.web.get("stuck_after", DEFAULT_STUCK_AFTER_SECONDS))
    workers = api.processes()
    consumed = {queue for process in workers for queue in process.queues}
    sizes, latencies, notices = {}, {}, []
    # on_demand: no worker while nothing waits is the normal state, and one starting takes a
    # few seconds (within a slot's life)
    on_demand = settings.mode == "on_demand"
    starting = SLOT_SECONDS if on_demand else 0
    if not workers and not on_demand:
        notices.append("no live worker process: start one (jobkit worker) and check that it "
                       "reaches Redis")
    for queue in api.queues():
        sizes[queue.name] = size = queue.size()
        latencies[queue.name] = latency = round(queue.latency(), 3)
        if size and latency > stuck_after:
            paused = " (the queue is paused: resume it on /queues)" if queue.paused() else ""
            notices.append(f"queue {queue.name!r}: the next job has waited {latency:.0f} s "
                           f"(more than {stuck_after:.0f} s){paused}; check that workers are "
                           "running and keeping up (jobkit processes, jobkit queues)")
        if size and queue.name not in consumed and latency > starting:
            notices.append(f"queue {queue.name!r} has {size} job(s) but no live worker "
                           f"consumes it; start one: jobkit worker -q {shlex.quote(queue.name)}")
    ok = not notices
    body = {
        "status": "ok" if ok else stuck_word(),
        "notice": {"notices": notices},
        "active_job": {"queue_adapter": settings.adapter},
        "job": {"mode": settings.mode, "polling_queues": settings.queue_names,
                "stuck_after": stuck_after, "sizes": sizes, "latencies": latencies,
                "workers": [{"id": p.id, "hostname": p.hostname, "pid": p.pid,
                             "queues": p.queues, "beat_at": p.beat_at,
                             "running": len(p.in_flight)} for p in workers]},
        "item": {"name": "jobkit:processes", "current_count": len(workers),
                 "updated": dt.datetime.now(dt.UTC).isoformat()},
    }
    return ok, body


@router.route("GET", "/status.json")
def status(request: Request) -> Response:
    ok, body = service_status()
    return Response(json.dumps(body, indent=2), "200 OK" if ok else "503 Service Unavailable",
                    "application/json", [("Cache-Control", "no-store")])
