"""The periodic jobs page: every entry with its next and last run; pause, resume, run now."""

from __future__ import annotations

from dataclasses import dataclass

from jobkit import periodic
from jobkit.errors import JobClassError, JobkitError
from jobkit.job import resolve_job_class
from jobkit.masking import mask_secrets
from jobkit.periodic import PeriodicEntry, PeriodicState
from jobkit.web.csrf import csrf_ok
from jobkit.web.dashboard import forbidden
from jobkit.web.http import Request, Response, redirect
from jobkit.web.routes import page, router

ACTIONS = ("pause", "resume", "run")


@dataclass(frozen=True)
class Row:
    """What the page shows of one entry (the template escapes every field)."""

    name: str
    schedule: str
    job_class: str
    arguments: str
    queue: str
    state: str  # "active", "paused" or "disabled", as `jobkit periodic` says
    next_run: float
    last_run: float | None
    # the last tick was recorded but not enqueued: it came too late, or it passed while the
    # entry was paused (resume records it so)
    last_skipped: bool
    last_job_id: str | None
    last_enqueued_at: float | None
    description: str


def _queue(entry: PeriodicEntry) -> str:
    """The entry's queue, else its class's `queue_as` when that is a name this process can
    import, else a word saying so."""
    if entry.queue:
        return entry.queue
    try:
        queue_as = resolve_job_class(entry.job_class).queue_as
    except JobClassError:
        return "(the class's queue_as)"
    return queue_as if isinstance(queue_as, str) else "(the class's queue_as)"


def _row(state: PeriodicState) -> Row:
    entry = state.entry
    tick, enqueued = state.last_tick, state.last_enqueued_at
    return Row(
        name=entry.name, schedule=entry.schedule_text, job_class=entry.job_class,
        arguments=entry.arguments_text, queue=_queue(entry), state=state.status,
        next_run=state.next_tick.timestamp(),
        last_run=tick.timestamp() if tick else None, last_skipped=state.last_tick_skipped,
        last_job_id=state.last_job_id,
        last_enqueued_at=enqueued.timestamp() if enqueued else None,
        description=entry.description)


@router.route("GET", "/periodic")
def listing(request: Request) -> Response:
    return page(request, "periodic.html", rows=[_row(state) for state in periodic.states()])


@router.route("POST", "/periodic")
def act(request: Request) -> Response:
    form = request.form()
    if not csrf_ok(request, form):
        return forbidden()
    name = (form.get("name") or [""])[-1]
    action = (form.get("action") or [""])[-1]
    if action not in ACTIONS:
        return Response(f"unknown action {action!r}", "400 Bad Request", "text/plain")
    if name not in {entry.name for entry in periodic.entries()}:
        return _no_such_entry(name)
    if action == "run":
        try:
            periodic.run_now(name)
        except (JobkitError, LookupError, ValueError, TypeError) as exc:  # e.g. class gone
            return Response(mask_secrets(f"{name}: run now failed: {type(exc).__name__}: {exc}"),
                            "409 Conflict", "text/plain")
    else:
        try:
            if action == "pause":
                periodic.pause(name)
            else:
                periodic.resume(name)
        except KeyError:  # removed since the check above
            return _no_such_entry(name)
    return redirect(f"{request.root}/periodic")


def _no_such_entry(name: str) -> Response:
    return Response(f"no periodic entry named {name!r} (it may have been removed): nothing "
                    "was done; reload the page", "404 Not Found", "text/plain")
