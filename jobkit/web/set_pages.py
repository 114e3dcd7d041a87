"""Scheduled, retry and dead sets: paged lists filtered by class, queue and text, detail, and
actions on selected entries or on all of them (all matching the filter; bulk_pages.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from jobkit import api, cancellation
from jobkit.job_sets import JobEntry, JobSet, SetFilter, UnreadableEntryError
from jobkit.web import bulk_pages
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
        return bulk_pages.refusal(entry, str(exc))
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


def set_filter(values: Mapping[str, str]) -> SetFilter:
    """The filter in a page's query: `class`, `queue` and `q`."""
    return SetFilter(values.get("class", "").strip(), values.get("queue", "").strip(),
                     values.get("q", "").strip())


def set_url(name: str, match: SetFilter, start: int = 0) -> str:
    """A set's page with this filter and first entry, after the app's root."""
    fields = {"class": match.job_class, "queue": match.queue, "q": match.text,
              "start": start or ""}
    query = urlencode({key: value for key, value in fields.items() if value})
    return f"/{name}" + (f"?{query}" if query else "")


@router.route("GET", "/<set:scheduled|retries|dead>")
def listing(request: Request) -> Response:
    found = _set(request)
    if found is None:
        return Response("not found", "404 Not Found", "text/plain")
    job_set, title = found
    name, match, start = request.params["set"], set_filter(request.query), _page_start(request)
    size = job_set.size()
    matches, entries = job_set.matching_page(match, start, PAGE_SIZE) if match else \
        (size, job_set.page(start, PAGE_SIZE))
    return page(request, "set.html", name=name, title=title, entries=entries, match=match,
                start=start, set_size=size, size=matches, page_size=PAGE_SIZE,
                pager_keep=set_url(name, match).partition("?")[2],
                here=request.root + set_url(name, match, start), killable=name != "dead",
                newest_first=bool(match) or job_set.newest_first)


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
    """An action on the selected entries (`key`), or on all (`action=all`, `then=`) that
    match the filter in the query (the page's own); back to the same filter and page."""
    found = _set(request)
    if found is None:
        return Response("not found", "404 Not Found", "text/plain")
    form = request.form()
    if not csrf_ok(request, form):
        return forbidden()
    job_set = found[0]
    match = set_filter(request.query)  # the form's action URL is the page's
    back = set_url(request.params["set"], match, _page_start(request))
    action = (form.get("action") or [""])[-1]
    if action in ("all", "delete_all"):  # delete_all: the older form of all + delete
        then = (form.get("then") or [""])[-1] if action == "all" else "delete"
        if then not in job_set.bulk_actions:
            return Response(f"unknown action {then!r} for all", "400 Bad Request",
                            "text/plain")
        return bulk_pages.begin(request, job_set, then, match, back)
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
    for key in form.get("key", []):
        entry = job_set.fetch_key(key)
        if entry is not None and (reason := handler(entry)):
            refused.append(reason)
    if refused:
        return bulk_pages.refused_answer(len(refused), refused)
    return redirect(request.root + back)
