"""Dashboard, queues and busy pages."""

from __future__ import annotations

import time

from jobkit import api, cancellation
from jobkit.redis_client import get_redis
from jobkit.web.csrf import csrf_ok
from jobkit.web.http import Request, Response, redirect, url_part
from jobkit.web.routes import page, router

HISTORY_DAYS = 14
#: The dashboard's history lengths, one day to six months (`?days=`).
HISTORY_CHOICES = (1, 7, 14, 30, 90, 180)
PAGE_SIZE = 25
REDIS_INFO_FIELDS = ("redis_version", "uptime_in_days", "connected_clients",
                     "used_memory_human", "used_memory_peak_human", "maxmemory_policy")


def forbidden() -> Response:
    return Response("bad or missing CSRF token: reload the page and try again",
                    "403 Forbidden", "text/plain")


@router.route("GET", "/")
def dashboard(request: Request) -> Response:
    stats = api.Stats()
    asked = request.query.get("days", "")
    days = int(asked) if asked.isdigit() and int(asked) in HISTORY_CHOICES else HISTORY_DAYS
    history = list(reversed(stats.history(days).items()))
    peak = max([1, *(max(p, f) for _, (p, f) in history)])
    info = get_redis().info()
    redis_info = {name: info.get(name) for name in REDIS_INFO_FIELDS}
    return page(request, "dashboard.html", live=True, days=days, day_choices=HISTORY_CHOICES,
                stats=stats, history=history, peak=peak,
                redis_info=redis_info, queues=api.queues(),
                sets={"scheduled": api.ScheduledSet().size(), "retries": api.RetrySet().size(),
                      "dead": api.DeadSet().size()},
                busy=len(api.processes()))


@router.route("GET", "/queues")
def queues(request: Request) -> Response:
    return page(request, "queues.html", live=True, queues=api.queues())


@router.route("GET", "/queues/<name:.+>")
def queue(request: Request) -> Response:
    queue = api.Queue(request.params["name"])
    start = _page_start(request)
    return page(request, "queue.html", queue=queue, jobs=queue.jobs(start, PAGE_SIZE),
                start=start, size=queue.size(), page_size=PAGE_SIZE)


@router.route("POST", "/queues/<name:.+>")
def queue_action(request: Request) -> Response:
    form = request.form()
    if not csrf_ok(request, form):
        return forbidden()
    queue = api.Queue(request.params["name"])
    # The forms also post the name: an action never lands on a queue other than the one shown.
    posted = (form.get("queue") or [None])[-1]
    if posted is not None and posted != queue.name:
        return Response(f"the form names queue {posted!r} but the URL names {queue.name!r}: "
                        "nothing was done; reload the page and try again", "400 Bad Request",
                        "text/plain")
    action = (form.get("action") or [""])[-1]
    if action == "pause":
        queue.pause()
    elif action == "resume":
        queue.resume()
    elif action == "clear":
        queue.clear()
    elif action == "remove":
        try:
            queue.remove()
        except ValueError as exc:  # jobs wait in it (pushed since the page showed it empty)
            return Response(str(exc), "409 Conflict", "text/plain")
    elif action == "delete":
        job = queue.find((form.get("job_id") or [""])[-1])
        if job is not None:
            queue.delete(job)
    elif action == "cancel":
        return cancel(request, form, f"{request.root}/queues/{url_part(queue.raw_name)}")
    else:
        return Response(f"unknown action {action!r}", "400 Bad Request", "text/plain")
    return redirect(f"{request.root}/queues")


@router.route("GET", "/busy")
def busy(request: Request) -> Response:
    return page(request, "busy.html", live=True, processes=api.processes(), now=time.time())


@router.route("POST", "/busy")
def busy_action(request: Request) -> Response:
    form = request.form()
    if not csrf_ok(request, form):
        return forbidden()
    action = (form.get("action") or [""])[-1]
    if action in ("quiet", "stop"):
        return process_command(request, (form.get("process") or [""])[-1], action)
    return cancel(request, form, f"{request.root}/busy")


def process_command(request: Request, process_id: str, action: str) -> Response:
    """The Quiet and Stop buttons: the command goes through Redis to that live process."""
    process = next((p for p in api.processes() if p.id == process_id), None)
    if process is None:
        return Response(f"no live worker process {process_id!r}: nothing was done",
                        "400 Bad Request", "text/plain")
    try:
        if action == "quiet":
            process.quiet()
        else:
            process.stop()
    except ValueError as exc:  # an embedded worker's: it takes no commands
        return Response(f"{exc}: nothing was done", "400 Bad Request", "text/plain")
    return redirect(f"{request.root}/busy")


def cancel(request: Request, form: dict[str, list[str]], back: str) -> Response:
    """The Cancel buttons (queue and busy pages): `jobkit.cancel` on the posted job id, hard
    when the action says so; then back to the page."""
    action = (form.get("action") or [""])[-1]
    if action not in ("cancel", "cancel_hard"):
        return Response(f"unknown action {action!r}", "400 Bad Request", "text/plain")
    job_id = (form.get("job_id") or [""])[-1]
    if not job_id:
        return Response("no job_id given: nothing was cancelled", "400 Bad Request",
                        "text/plain")
    try:
        cancellation.cancel(job_id, hard=action == "cancel_hard")
    except ValueError as exc:  # an id no job can have, or a key in the way: nothing was done
        return Response(f"{exc}: nothing was cancelled", "400 Bad Request", "text/plain")
    return redirect(back)


def _page_start(request: Request) -> int:
    try:
        return max(0, int(request.query.get("start", "0")))
    except ValueError:
        return 0

