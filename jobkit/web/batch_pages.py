"""The batches pages: recent batches with their progress, and one batch (counters, callbacks,
parent), all read through `jobkit.api` (one HGETALL per batch). A batch's failing and dead
members are found by its id in the Retries and Dead pages' search.

Every text from Redis reaches the template through `display.escaped` (control characters as
``\\xNN``); the template's autoescape does the HTML.
"""

from __future__ import annotations

import dataclasses

from jobkit import api, display
from jobkit.batch.state import EVENTS, BatchStatus, RedisBatches
from jobkit.web.dashboard import PAGE_SIZE, _page_start
from jobkit.web.http import Request, Response
from jobkit.web.routes import page, router


@router.route("GET", "/batches")
def listing(request: Request) -> Response:
    start = _page_start(request)
    return page(request, "batches.html", batch=None,
                batches=[_shown(b) for b in api.batches(start, PAGE_SIZE)],
                start=start, size=RedisBatches().size(), page_size=PAGE_SIZE)


@router.route("GET", "/batches/<batch_id:[^/]+>")
def one(request: Request) -> Response:
    status = api.batch(request.params["batch_id"])
    if status is None:
        return Response("batch not found (expired, or never created)", "404 Not Found",
                        "text/plain")
    return page(request, "batches.html", batch=_shown(status), events=EVENTS)


def _shown(status: BatchStatus) -> BatchStatus:
    """The status with its texts escaped for the page."""
    return dataclasses.replace(
        status, description=display.escaped(status.description),
        callbacks={event: display.escaped(path) for event, path in status.callbacks.items()})
