"""Scheduled, retry and dead sets: paged lists, search, detail, and actions (also in bulk)."""

from __future__ import annotations

import json
from typing import Any

from jobkit import api, cancellation
from jobkit.job_sets import JobEntry, JobSet, UnreadableEntryError
from jobkit.web.csrf import csrf_ok
from jobkit.web.dashboard import PAGE_SIZE, _page_start, forbidden
from jobkit.web.http import Request, Response, redirect
from jobkit.web.routes import page, router

# set name in URLs -> (class, title); the templates word each set's buttons
SETS: dict[str, tuple[type[JobSet], str]] = {
    "scheduled": (api.ScheduledSet, "Scheduled"),
    "retries": (api.RetrySet, "Retries"),
    "dead": (api.DeadSet, "Dead"),
}


def _set(request: Request) -> tuple[JobSet, str] | None:
    found = SETS.get(request.params["set"])
    if found is None:
        return None
    cls, title = found
    return cls(), title


def push(job_set: JobSet, entry: JobEntry) -> str | None:
    """Send one entry to its queue; the reason it was refused, or None. An entry that holds
    no readable job message stays where it is (delete it instead)."""
    try:
        job_set.push_now(entry)
    except UnreadableEntryError as exc:
        return f"{entry.key}: cannot be sent to a queue: {exc}"
    return None


def cancel(entry: JobEntry) -> str | None:
    """`jobkit.cancel` on an entry's job (scheduled and retry sets): out of the set into the
    dead set, reason "cancelled"; the reason it was refused, or None."""
    if entry.job_id is None:
        return f"{entry.key}: has no job id to cancel by"
    try:
        cancellation.cancel(entry.job_id)
    except ValueError as exc:  # an id too long to be a job's, or the mark's key in the way
        return f"{entry.key}: {exc}"
    return None


@router.route("GET", "/<set:scheduled|retries|dead>")
def listing(request: Request) -> Response:
    found = _set(request)
    if found is None:
        return Response("not found", "404 Not Found", "text/plain")
    job_set, title = found
    query = request.query.get("q", "").strip()
    start = _page_start(request)
    entries = job_set.search(query, limit=PAGE_SIZE) if query else job_set.page(start,
                                                                                 PAGE_SIZE)
    return page(request, "set.html", name=request.params["set"], title=title,
                entries=entries, query=query, start=start, size=job_set.size(),
                page_size=PAGE_SIZE, killable=request.params["set"] != "dead")


@router.route("GET", "/<set:scheduled|retries|dead>/<key:.+>")
def detail(request: Request) -> Response:
    found = _set(request)
    entry = found[0].fetch_key(request.params["key"]) if found else None
    if found is None or entry is None:
        return Response("no such job (it may have run or been deleted)", "404 Not Found",
                        "text/plain")
    job_set, title = found
    payload = entry.payload if isinstance(entry.payload, dict) else {}
    return page(request, "entry.html", name=request.params["set"], title=title,
                entry=entry, arguments=_readable(payload.get("args"), payload.get("kwargs")),
                killable=request.params["set"] != "dead")


LONG_TEXT = 400  # characters of one string shown on an entry's page


def _readable(args: Any, kwargs: Any) -> str:
    """The serialized arguments, pretty-printed (the page escapes them), long strings cut:
    a mail's rendered bytes (MailDeliveryJob's `rendered`) or a document would bury the rest."""
    try:
        return json.dumps(_cut({"args": args, "kwargs": kwargs}), indent=2, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return repr({"args": args, "kwargs": kwargs})


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > LONG_TEXT:
        return f"{value[:LONG_TEXT]}… ({len(value) - LONG_TEXT:,} more characters)"
    if isinstance(value, list):
        return [_cut(item) for item in value]
    if isinstance(value, dict):
        return {key: _cut(item) for key, item in value.items()}
    return value


@router.route("POST", "/<set:scheduled|retries|dead>")
def act(request: Request) -> Response:
    found = _set(request)
    if found is None:
        return Response("not found", "404 Not Found", "text/plain")
    form = request.form()
    if not csrf_ok(request, form):
        return forbidden()
    job_set = found[0]
    back = f"{request.root}/{request.params['set']}"
    action = (form.get("action") or [""])[-1]
    if action == "delete_all":
        job_set.clear()
        return redirect(back)
    every = action == "all"
    if every:
        action = (form.get("then") or [""])[-1]
    # Each handler returns why it refused an entry, or None.
    kill = getattr(job_set, "kill", None)
    handlers = {"push": lambda entry: push(job_set, entry),
                "delete": lambda entry: job_set.delete(entry) and None,
                "kill": kill and (lambda entry: kill(entry) and None),
                "cancel": kill and cancel}
    handler = handlers.get(action)
    if handler is None:
        return Response(f"unknown action {action!r}", "400 Bad Request", "text/plain")
    refused: list[str] = []
    if every:
        # Each action takes the entry out of the set, except a refused push: those stay at
        # the front, so the next page starts after them.
        while page_ := job_set.page(len(refused), 100):
            refused += filter(None, map(handler, page_))
    else:
        for key in form.get("key", []):
            entry = job_set.fetch_key(key)
            if entry is not None and (reason := handler(entry)):
                refused.append(reason)
    if refused:
        lines = "\n".join(refused)
        return Response(f"refused {len(refused)} entr{'y' if len(refused) == 1 else 'ies'} "
                        f"(the others were done); delete them instead:\n{lines}\n",
                        "409 Conflict", "text/plain")
    return redirect(back)
