"""The batches pages: recent batches with their progress, and one batch (counters, callbacks,
parent), all read through `jobkit.api` (one HGETALL per batch; a key that is not a hash is
shown as such, not a failed page). A batch's failing and dead members are found by its id in
the Retries and Dead pages' search.

Every text from Redis reaches the template through `display.escaped` (control characters as
``\\xNN``); the template's autoescape does the HTML.
"""

from __future__ import annotations

import dataclasses

from jobkit import api, display
from jobkit.batch.state import EVENTS, BatchProblem, BatchStatus, RedisBatches
from jobkit.web.dashboard import PAGE_SIZE, _page_start
from jobkit.web.http import Request, Response
from jobkit.web.routes import page, router


@router.route("GET", "/batches")
def listing(request: Request) -> Response:
    start = _page_start(request)
    return page(request, "batches.html", batch=None, shown=display.escaped,
                batches=[_shown(b) for b in RedisBatches().recent(start, PAGE_SIZE)],
                start=start, size=RedisBatches().size(), page_size=PAGE_SIZE)


# `.+`: a batch id may hold a slash (the server decoded %2F before routing).
@router.route("GET", "/batches/<batch_id:.+>")
def one(request: Request) -> Response:
    try:
        status = api.batch(request.params["batch_id"])
    except ValueError as exc:  # its key is not a batch's hash: say so, as the listing does
        return Response(display.escaped(str(exc)), "500 Internal Server Error", "text/plain")
    if status is None:
        return Response("batch not found (expired, or never created)", "404 Not Found",
                        "text/plain")
    return page(request, "batches.html", batch=_shown(status), events=EVENTS,
                shown=display.escaped)


def _shown(status: BatchStatus | BatchProblem) -> BatchStatus | BatchProblem:
    """The status with its texts escaped for the page (ids through `shown` in the
    template: their raw text makes the links)."""
    if isinstance(status, BatchProblem):
        return dataclasses.replace(status, problem=display.escaped(status.problem))
    return dataclasses.replace(
        status, description=display.escaped(status.description),
        callbacks={event: display.escaped(path) for event, path in status.callbacks.items()})
