"""The controls page: concurrency limits (and the jobs each holds back, in order), unique locks
with an Unlock button, debounced jobs and rate limiters, all read through `jobkit.api`.

Every text from Redis reaches the template through `display.escaped` (undecodable bytes and
control characters as ``\\xNN``); the template's autoescape does the HTML.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobkit import api, display, keys
from jobkit.redis_client import get_redis
from jobkit.web.csrf import csrf_ok
from jobkit.web.dashboard import PAGE_SIZE, _page_start, forbidden
from jobkit.web.http import Request, Response, redirect
from jobkit.web.routes import page, router

LIST_LIMIT = 1000  # unique locks and debounce keys shown at most (each a SCAN)


@dataclass(frozen=True)
class LimitRow:
    """One concurrency key: `link` is the key as stored, for the held page's URL."""

    key: str
    link: str
    running: list[tuple[str, float]]  # job id, when its slot expires (Unix seconds)
    held: int


@dataclass(frozen=True)
class LimiterRow:
    """One rate limiter, its numbers as text."""

    kind: str
    name: str
    count: int
    interval: str
    used: str
    retry_after: str


def _text(value: str | None) -> str:
    return "-" if value is None else display.escaped(value)


def _limit(state: api.ConcurrencyState) -> LimitRow:
    running = sorted(state.running.items(), key=lambda item: item[1])
    return LimitRow(display.escaped(state.key), state.key,
                    [(display.escaped(job_id), expiry) for job_id, expiry in running],
                    state.held)


def _limiter(state: api.LimiterState) -> LimiterRow:
    interval = state["interval"]
    return LimiterRow(state["kind"], display.escaped(state["name"]), state["count"],
                      "-" if interval is None else f"{interval:g} s", f"{state['used']:g}",
                      f"{state['retry_after']:.3f} s")


def _debounced(job: api.DebouncedJob) -> api.DebouncedJob:
    """The same job with every field escaped for the page."""
    return api.DebouncedJob(job.key, _text(job.job_id), _text(job.job_class), _text(job.queue),
                            job.due, job.problem and display.escaped(job.problem))


def _held(job: api.HeldJob) -> api.HeldJob:
    return api.HeldJob(_text(job.job_id), _text(job.job_class), _text(job.queue),
                       _text(job.args), job.held_at, job.problem, job.text)


@router.route("GET", "/controls")
def listing(request: Request) -> Response:
    return page(request, "controls.html", held_key=None, list_limit=LIST_LIMIT,
                limits=[_limit(state) for state in api.concurrency_limits()],
                locks=api.unique_locks(LIST_LIMIT),  # key and holder already escaped
                debounced=[_debounced(job) for job in api.debounced(LIST_LIMIT)],
                limiters=[_limiter(state) for state in api.limiters()])


@router.route("GET", "/controls/held")
def held(request: Request) -> Response:
    key = request.query.get("key")
    if not key:
        return Response("which concurrency key? /controls/held?key=KEY", "400 Bad Request",
                        "text/plain")
    start = _page_start(request)
    return page(request, "controls.html", held_key=key, shown_key=display.escaped(key),
                jobs=[_held(job) for job in api.held_jobs(key, start, PAGE_SIZE)],
                start=start, size=api.held_count(key), page_size=PAGE_SIZE)


@router.route("POST", "/controls")
def act(request: Request) -> Response:
    form = request.form()
    if not csrf_ok(request, form):
        return forbidden()
    action = (form.get("action") or [""])[-1]
    if action != "unlock":
        return Response(f"unknown action {action!r}", "400 Bad Request", "text/plain")
    api.release_unique_lock(_lock_key((form.get("key") or [""])[-1]))
    return redirect(f"{request.root}/controls")


def _lock_key(ident: str) -> str | bytes:
    """The job key a form names by `UniqueLock.ident`: itself, or for a digest (``~...``, a
    key that is not plain text) the stored bytes it was made from, found by SCAN."""
    if not ident.startswith("~"):
        return ident
    prefix = len(keys.unique(""))
    for name in get_redis().scan_iter(match=keys.unique("*"), count=1000):
        raw = display.as_bytes(name)[prefix:]
        if display.digest(raw) == ident:
            return raw
    return ident
