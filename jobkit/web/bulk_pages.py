"""The "… all" actions of the set pages, done a chunk at a time with their progress shown.

Acting on 200,000 entries in one request takes longer than proxies wait. So the POST records
the operation in Redis (keys.set_bulk), does its first chunk and answers at once: done, or a
progress page whose script asks for one chunk after another (a "Continue" button without
script). Each chunk is one Lua call (JobSet.act_chunk) that continues from the ZSCAN cursor
kept in the record and adds to its counts, so a reload, a second tab or a lost answer neither
repeats nor skips an entry; other pages are served between chunks.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from jobkit import keys
from jobkit.display import as_bytes
from jobkit.job_sets import DeadSet, JobEntry, JobSet, RetrySet, ScheduledSet, SetFilter
from jobkit.redis_client import get_redis
from jobkit.web.csrf import csrf_ok
from jobkit.web.dashboard import forbidden
from jobkit.web.http import Request, Response, redirect
from jobkit.web.routes import page, router

__all__ = ["Operation", "begin", "refusal", "refused_answer"]

KEEP_SECONDS = 86_400  # a record outlives its last chunk by a day, for a late reload
REFUSALS_SHOWN = 20
_SETS: dict[str, type[JobSet]] = {cls.name: cls for cls in (ScheduledSet, RetrySet, DeadSet)}


def refusal(entry: JobEntry, reason: str | None) -> str:
    """Why an entry was not sent to its queue, for people."""
    return f"{entry.key}: cannot be sent to a queue: {reason or 'it holds no job message'}"


@dataclass(frozen=True)
class Operation:
    """An "… all" action as recorded: what, on which entries, and how far it got."""

    ident: str
    set_name: str
    action: str
    match: SetFilter
    back: str  # the set's page (with its filter), after the app's root
    total: int  # the matching entries when it began
    done: int
    refused: int
    finished: bool

    @classmethod
    def load(cls, ident: str) -> Operation | None:
        """The operation, or None when unknown, expired or not one (bad bytes)."""
        try:
            found = {as_bytes(k).decode(): as_bytes(v).decode() for k, v in
                     get_redis().hgetall(keys.set_bulk(ident)).items()}
            if found["action"] not in _SETS[found["set"]].bulk_actions:
                return None
            return cls(ident, found["set"], found["action"], SetFilter(
                found["class"], found["queue"], found["q"]), found["back"], int(found["total"]),
                int(found["done"]), int(found["refused"]), found["finished"] == "1")
        except (KeyError, ValueError):  # UnicodeDecodeError too
            return None

    def step(self) -> Operation:
        """Do the next chunk (nothing once finished); the operation after it."""
        client = get_redis()
        refused = _SETS[self.set_name](client).act_chunk(self.action, self.match,
                                                         keys.set_bulk(self.ident))
        with client.pipeline() as pipe:
            if refused:
                pipe.rpush(keys.set_bulk_refused(self.ident),
                           *[refusal(e, e.unpushable_reason) for e in refused])
                pipe.ltrim(keys.set_bulk_refused(self.ident), 0, REFUSALS_SHOWN - 1)
            for key in (keys.set_bulk(self.ident), keys.set_bulk_refused(self.ident)):
                pipe.expire(key, KEEP_SECONDS)
            pipe.execute()
        return Operation.load(self.ident) or self

    def refusals(self) -> list[str]:
        """The first REFUSALS_SHOWN reasons."""
        return [as_bytes(line).decode("utf-8", "replace") for line in
                get_redis().lrange(keys.set_bulk_refused(self.ident), 0, -1)]

    def as_json(self) -> str:
        return json.dumps({"done": self.done, "total": self.total, "refused": self.refused,
                           "finished": self.finished})


def begin(request: Request, job_set: JobSet, action: str, match: SetFilter,
          back: str) -> Response:
    """Start an "… all" action on the entries `match` selects and do its first chunk: a
    small set is done at once (back to `back`; 409 listing any refused entries), a larger
    one continues on its progress page. Deleting a whole set is one DEL instead."""
    if action == "delete" and not match:
        job_set.clear()
        return redirect(request.root + back)
    ident = uuid.uuid4().hex
    total = len(job_set.matching_scores(match)) if match else job_set.size()
    with get_redis().pipeline() as pipe:
        pipe.hset(keys.set_bulk(ident), mapping={
            "set": job_set.name, "action": action, "class": match.job_class,
            "queue": match.queue, "q": match.text, "back": back, "total": total, "cursor": 0,
            "finished": 0, "done": 0, "refused": 0})
        pipe.expire(keys.set_bulk(ident), KEEP_SECONDS)
        pipe.execute()
    operation = Operation.load(ident)
    if operation is None:  # expired at once: a Redis without memory left
        return Response("could not record the operation", "503 Service Unavailable",
                        "text/plain")
    operation = operation.step()
    if not operation.finished:
        return redirect(f"{request.root}/bulk/{ident}")
    if operation.refused:
        return refused_answer(operation.refused, operation.refusals())
    return redirect(request.root + back)


def refused_answer(count: int, reasons: list[str]) -> Response:
    """409: `count` entries were refused (`reasons`: why, for some or all); the others done."""
    lines = "\n".join(reasons)
    return Response(f"refused {count} entr{'y' if count == 1 else 'ies'} (the others were "
                    f"done); delete them instead:\n{lines}\n", "409 Conflict", "text/plain")


@router.route("GET", "/bulk/<ident>")
def progress(request: Request) -> Response:
    operation = Operation.load(request.params["ident"])
    if operation is None:
        return Response("no such operation (they are kept for a day)", "404 Not Found",
                        "text/plain")
    return page(request, "bulk.html", operation=operation, refusals=operation.refusals())


@router.route("POST", "/bulk/<ident>")
def step(request: Request) -> Response:
    """One chunk: JSON for the page's script, else back to the progress page."""
    form = request.form()
    if not csrf_ok(request, form):
        return forbidden()
    operation = Operation.load(request.params["ident"])
    if operation is None:
        return Response("no such operation (they are kept for a day)", "404 Not Found",
                        "text/plain")
    operation = operation.step()
    if form.get("json"):
        return Response(operation.as_json(), content_type="application/json",
                        headers=[("Cache-Control", "no-store")])
    return redirect(f"{request.root}/bulk/{operation.ident}")
