"""IterableJob: a job that works through items from a cursor and can stop between any two.

Sidekiq's IterableJob and Rails' ActiveJob::Continuable, over jobkit's worker: the job yields
``(item, cursor)`` pairs, jobkit saves the cursor as it goes (iteration/cursor.py), and on TERM
or past `max_iteration_runtime` it stops after the current item, saves that item's cursor and
raises `Interrupted`, on which the worker puts the same message back in its queue
(worker/execution.py). A run after a crash starts from the last cursor saved.
"""

from __future__ import annotations

import datetime as dt
import inspect
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

from jobkit.durations import seconds
from jobkit.errors import JobClassError
from jobkit.iteration import cursor as saved_cursor
from jobkit.iteration.stop import stop_requested, term_stops_iteration, worker_runs
from jobkit.job import Job

__all__ = ["Interrupted", "IterableJob", "IterationCancelled", "indexed"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_HOOKS = ("on_start", "on_resume", "on_stop", "on_cancel", "on_complete")


class Interrupted(Exception):  # noqa: N818 (Sidekiq's and Rails' name)
    """An iteration stopped between items, its cursor saved: the worker puts the job back in
    its queue as it was (same id, executions unchanged; not a failure, not a retry)."""


class IterationCancelled(Exception):  # noqa: N818 (it is not an error of the job's)
    """`jobkit.cancel` reached a running iteration: it stopped between items, its cursor saved,
    and the worker records it as cancelled (never retried; the dead set's Retry resumes it)."""


class IterableJob(Job):
    """Define ``build_enumerator(self, *args, cursor)`` returning ``(item, cursor)`` pairs
    that come after `cursor` (None on the first run; `indexed` makes them for a list, a
    range or any iterable), and ``each_iteration(self, item, *args)``. Not `perform`.

    Class options: ``max_iteration_runtime`` (seconds or timedelta; None: no limit),
    ``cursor_save_seconds`` and ``cursor_save_items`` (the cursor is saved after an item once
    either is reached; 0 seconds: after every item), ``cursor_ttl``. Hooks: ``on_start``,
    ``on_resume``, ``on_stop``, ``on_cancel``, ``on_complete``. docs/resumable.md says when each
    applies.
    """

    #: After this long a run stops between items and the job goes to the back of its queue.
    max_iteration_runtime: ClassVar[float | dt.timedelta | None] = None
    #: The cursor is saved once this long has passed since the last save (0: every item)...
    cursor_save_seconds: ClassVar[float | dt.timedelta] = 1.0
    #: ...or once this many items were done since (None: time only).
    cursor_save_items: ClassVar[int | None] = None
    #: How long a saved cursor is kept after its last save (each save renews it).
    cursor_ttl: ClassVar[float | dt.timedelta] = dt.timedelta(days=30)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_definition(cls)

    def _setup(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        super()._setup(args, kwargs)
        #: The cursor of the last item done (what `build_enumerator` got, before the first).
        self.cursor: Any = None

    def build_enumerator(self, *args: Any, cursor: Any) -> Iterable[tuple[Any, Any]]:
        raise NotImplementedError(f"{type(self).__qualname__} must define build_enumerator()")

    def each_iteration(self, item: Any, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{type(self).__qualname__} must define each_iteration()")

    def on_start(self) -> None:
        """Before the first item of the first run (no cursor saved)."""

    def on_resume(self) -> None:
        """Before the first item of a run that found a saved cursor."""

    def on_stop(self) -> None:
        """When a run stops between items (TERM, max_iteration_runtime), its cursor saved."""

    def on_cancel(self) -> None:
        """When a run stops between items because `jobkit.cancel` was called for the job."""

    def on_complete(self) -> None:
        """Once the enumerator has no item left."""

    def check_arguments(self) -> None:
        """TypeError, naming the job, unless build_enumerator and each_iteration both accept
        the job's arguments."""
        name = type(self).__qualname__
        for method, extra, more in (("build_enumerator", (), {"cursor": None}),
                                    ("each_iteration", (None,), {})):
            try:
                inspect.signature(getattr(type(self), method)).bind(
                    None, *extra, *self.arguments, **self.kwargs, **more)
            except TypeError as exc:
                raise TypeError(f"{name}.{method}(): {exc}") from None

    def perform(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        whose = f"{cls.__qualname__} {self.job_id}"
        saving = worker_runs(self.job_id)  # elsewhere (perform_now, tests): every item, no Redis
        saved = saved_cursor.load(self.job_id) if saving else None
        if saved is not None and saved.finished:
            logger.info("%s already went through every item; nothing to do", whose)
            return
        self.cursor = saved.cursor if saved is not None else None
        items = self.build_enumerator(*args, cursor=self.cursor, **kwargs)
        if not isinstance(items, Iterable):
            raise TypeError(f"{cls.__qualname__}.build_enumerator must return an iterable of "
                            f"(item, cursor) pairs, not {items!r:.80}")
        (self.on_resume if saved is not None else self.on_start)()
        if not saving:
            self._iterate(items, None, whose, args, kwargs)
            return
        with term_stops_iteration():
            run = _Run(self, whose)
            self._iterate(items, run, whose, args, kwargs)
            saved_cursor.finish(self.job_id, run.ttl)

    def _iterate(self, items: Iterable[Any], run: _Run | None, whose: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        """Every item after the cursor, then on_complete; with `run` (on a worker), the cursor
        saved as it goes, and a stop between items."""
        cls = type(self)
        try:
            for pair in items:
                if not (isinstance(pair, tuple) and len(pair) == 2):
                    raise TypeError(f"{cls.__qualname__}.build_enumerator must yield (item, "
                                    f"cursor) pairs (jobkit.iteration.indexed makes them), "
                                    f"not {pair!r:.80}")
                item, cursor = pair
                self.each_iteration(item, *args, **kwargs)
                self.cursor = cursor
                if run is None or (why := run.item_done()) is None:
                    continue
                if why == _CANCELLED:
                    self.on_cancel()
                    raise IterationCancelled(f"{whose} cancelled; stopped after cursor "
                                             f"{cursor!r:.80}")
                self.on_stop()
                raise Interrupted(f"{whose} stopped after cursor {cursor!r:.80}: {why}; "
                                  "put back in its queue")
            self.on_complete()
        except Interrupted:
            raise
        except BaseException:  # a retry starts from the last item done
            if run is not None:
                run.save_on_failure()
            raise


_CANCELLED = "cancelled"


class _Run:
    """One run's saving policy: after an item, save the cursor when due or when stopping."""

    def __init__(self, job: IterableJob, whose: str) -> None:
        cls = type(job)
        self.job, self.whose = job, whose
        self.started = self.saved_at = time.monotonic()
        self.unsaved = 0
        self.limit = None if cls.max_iteration_runtime is None else seconds(
            cls.max_iteration_runtime, "max_iteration_runtime", JobClassError)
        self.every = seconds(cls.cursor_save_seconds, "cursor_save_seconds", JobClassError,
                             allow_zero=True)
        self.items = cls.cursor_save_items
        self.ttl = seconds(cls.cursor_ttl, "cursor_ttl", JobClassError)

    def item_done(self) -> str | None:
        """Why the run stops now (the cursor then saved), or None to go on."""
        self.unsaved += 1
        now = time.monotonic()
        why = (_CANCELLED if self.job.cancelled  # read from Redis at most once a second
               else "the worker is stopping (TERM)" if stop_requested()
               else f"max_iteration_runtime ({self.limit:g} s) reached"
               if self.limit is not None and now - self.started >= self.limit else None)
        if why is not None or now - self.saved_at >= self.every or (
                self.items is not None and self.unsaved >= self.items):
            self._save(now)
        return why

    def save_on_failure(self) -> None:
        if not self.unsaved:
            return
        try:
            self._save(time.monotonic())
        except Exception:  # the failure itself is what the retry policy must see
            logger.exception("%s: the cursor could not be saved; a retry repeats the items "
                             "done since the last save", self.whose)

    def _save(self, now: float) -> None:
        saved_cursor.save(self.job.job_id, saved_cursor.encode(self.job.cursor, self.whose),
                          self.ttl)
        self.saved_at, self.unsaved = now, 0


def indexed(items: Iterable[T], *, cursor: int | None) -> Iterator[tuple[T, int]]:
    """``(item, index)`` pairs of `items`, after the item at index `cursor` (all with None).

    A list, tuple or range is entered at the index directly; any other iterable (a file's
    lines, a CSV reader) is read from its start, skipping the items done."""
    if cursor is not None and (type(cursor) is not int or cursor < 0):
        raise TypeError(f"indexed(): cursor must be None or an index >= 0, not {cursor!r}")
    start = 0 if cursor is None else cursor + 1
    if isinstance(items, Sequence):
        return ((items[i], i) for i in range(start, len(items)))
    return zip(itertools.islice(items, start, None), itertools.count(start), strict=False)


def _check_definition(cls: type[IterableJob]) -> None:
    """JobClassError for what could never iterate, when the class is defined."""
    name = cls.__qualname__
    if "perform" in vars(cls):
        raise JobClassError(f"{name} is an IterableJob: define build_enumerator() and "
                            "each_iteration() instead of perform()")
    for method in ("build_enumerator", "each_iteration", *_HOOKS):
        value = vars(cls).get(method)
        if value is None:
            continue
        generator_ok = method == "build_enumerator"
        if not inspect.isfunction(value) or inspect.iscoroutinefunction(value) \
                or inspect.isasyncgenfunction(value) \
                or (inspect.isgeneratorfunction(value) and not generator_ok):
            kind = "a def method" + (" (a generator too)" if generator_ok else "")
            raise JobClassError(f"{name}.{method} must be {kind}, not {value!r:.80} "
                                "(async iteration is not supported)")
    build = vars(cls).get("build_enumerator")
    if build is not None:
        params = inspect.signature(build).parameters.values()
        if not any(p.name == "cursor" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                   or p.kind is p.VAR_KEYWORD for p in params):
            raise JobClassError(f"{name}.build_enumerator must take a `cursor` keyword "
                                "argument: def build_enumerator(self, ..., *, cursor)")
    if cls.max_iteration_runtime is not None:
        seconds(cls.max_iteration_runtime, f"{name}.max_iteration_runtime", JobClassError)
    seconds(cls.cursor_save_seconds, f"{name}.cursor_save_seconds", JobClassError,
            allow_zero=True)
    seconds(cls.cursor_ttl, f"{name}.cursor_ttl", JobClassError)
    items = cls.cursor_save_items
    if items is not None and (type(items) is not int or items < 1):
        raise JobClassError(f"{name}.cursor_save_items must be a whole number >= 1 or None, "
                            f"not {items!r}")
