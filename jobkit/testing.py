"""Test helpers: Sidekiq's three modes and Active Job's / Action Mailer's assertions.

    from jobkit import testing

    with testing.fake():                      # jobs are recorded, not run
        TaskLoggerJob.perform_later(42)
        testing.assert_enqueued_with(job=TaskLoggerJob, args=[42], queue="default")
        TaskLoggerJob.drain()                 # run them (and the jobs they enqueue)

Modes (each a context manager and a decorator): `fake` records jobs; `inline` performs each at
enqueue after a full JSON round trip, so an argument that would fail in production fails in
the test; `disable` uses the real broker. In `fake` and `inline`, mail is delivered to the
test outbox (`jobkit.mailer.deliveries`).

Assertions that take a count or a job work two ways, as in Rails: as a plain call they check
what was recorded so far; used as ``with assert_enqueued_jobs(2): ...`` they check only what
the block did. `perform_enqueued_jobs` and the count assertions take Rails' filters:
``only=`` / ``except_=`` (a Job class, its path, a list, or a function of the EnqueuedJob),
``queue=`` and, to perform, ``at=``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import dis
import functools
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Generic, TypeVar

from jobkit import adapters
from jobkit.adapters.base import Adapter
from jobkit.adapters.test import EnqueuedJob, SkippedJob, TestAdapter
from jobkit.arguments import serialize_value
from jobkit.config import Settings, current_settings, use_settings
from jobkit.errors import JobkitError
from jobkit.imports import class_path
from jobkit.job import Job, resolve_job_class

__all__ = [
    "EnqueuedJob",
    "JobFilter",
    "JobSelector",
    "MatchedJob",
    "SkippedJob",
    "TestAdapter",
    "advance",
    "assert_emails",
    "assert_enqueued_email_with",
    "assert_enqueued_emails",
    "assert_enqueued_jobs",
    "assert_enqueued_with",
    "assert_no_emails",
    "assert_no_enqueued_emails",
    "assert_no_enqueued_jobs",
    "assert_no_performed_jobs",
    "assert_performed_jobs",
    "assert_performed_with",
    "capture_emails",
    "clear",
    "deliver_enqueued_emails",
    "disable",
    "drain_all",
    "fake",
    "held",
    "inline",
    "jobs",
    "outbox",
    "perform_enqueued_jobs",
    "performed",
    "skipped",
]

#: Which jobs a helper looks at: a Job class, its import path, or None for every class.
JobFilter = type[Job] | str | None

#: What `only=` / `except_=` take, as Rails' `only:` / `except:`: a Job class or its import
#: path, a list of them, or a function given each recorded job (an `EnqueuedJob`) that says
#: whether it is one of them.
JobSelector = (type[Job] | str | Sequence[type[Job] | str]
               | Callable[[EnqueuedJob], bool])


# -- modes -------------------------------------------------------------------------------------

A = TypeVar("A", bound=Adapter)


class _Mode(contextlib.ContextDecorator, Generic[A]):
    """A mode: its adapter in force (and, for fake and inline, the test mail outbox) inside
    the block or the decorated function."""

    def __init__(self, adapter: Callable[[], A], test_mail: bool) -> None:
        self.make_adapter = adapter
        self.test_mail = test_mail
        self._saved: list[tuple[Adapter | None, Settings]] = []

    def __enter__(self) -> A:
        adapter = self.make_adapter()
        settings = current_settings()
        previous = adapters.use_adapter(adapter)
        self._saved.append((previous, settings))
        if self.test_mail:
            use_settings(dataclasses.replace(
                settings, mailer={**settings.mailer, "delivery_method": "test"}))
            outbox().clear()
        return adapter

    def __exit__(self, *exc: object) -> None:
        previous, settings = self._saved.pop()
        adapters.use_adapter(previous)
        use_settings(settings)


def fake() -> _Mode[TestAdapter]:
    """Record jobs instead of running them (Sidekiq::Testing.fake!)."""
    return _Mode(TestAdapter, test_mail=True)


def inline() -> _Mode[TestAdapter]:
    """Perform each job at enqueue, after a JSON round trip (Sidekiq::Testing.inline!)."""
    return _Mode(lambda: TestAdapter(perform_at_enqueue=True), test_mail=True)


def disable() -> _Mode[Adapter]:
    """Use the real broker (Sidekiq::Testing.disable!)."""
    return _Mode(lambda: adapters.build_adapter("celery"), test_mail=False)


def _recorder() -> TestAdapter:
    return adapters.current_adapter().recorder()


# -- reading and running recorded jobs -----------------------------------------------------------

def jobs(job: JobFilter = None, queue: str | None = None) -> list[EnqueuedJob]:
    """Recorded jobs not yet performed, optionally of one class and/or queue."""
    return _recorder().jobs(job, queue)


def performed(job: JobFilter = None, queue: str | None = None) -> list[EnqueuedJob]:
    """Recorded jobs performed so far, optionally of one class and/or queue."""
    return [r for r in _recorder().performed if r.matches(job, queue)]


def clear(job: JobFilter = None) -> None:
    """Forget recorded jobs (of one class, or all), their unique locks and skipped jobs."""
    _recorder().clear(job)


def skipped(job: JobFilter = None, queue: str | None = None) -> list[SkippedJob]:
    """Jobs the controls kept from running, oldest first: unique jobs not enqueued because
    their lock was held (``reason == "unique"``) and debounced jobs replaced by a later one
    (``"debounced"``); `by` is the job id that holds the lock, or that replaced it."""
    return _recorder().skipped_jobs(job, queue)


def held(job: JobFilter = None, queue: str | None = None) -> list[EnqueuedJob]:
    """Recorded jobs a concurrency limit would hold if workers fetched them all now: those
    after the first `to` jobs of their key, in order (nothing runs concurrently in tests)."""
    return _recorder().held(job, queue)


def drain_all(job: JobFilter = None, until: float | None = None) -> int:
    """Perform recorded jobs, and the jobs they enqueue, until none is left; returns how many.

    `until` (a Unix time) leaves jobs scheduled after it recorded, to travel in time."""
    return _recorder().drain(job, until)


def advance(seconds: float) -> int:
    """Move time forward for scheduled jobs, without sleeping.

    Fake mode: perform every recorded job due by then (calls add up). Real broker: push
    every scheduled or retrying job due within `seconds` to its queue now. Returns how many."""
    adapter = adapters.current_adapter()
    if isinstance(adapter, TestAdapter):
        adapter.clock_offset += seconds  # successive calls add up, as time would
        return adapter.drain(until=time.time() + adapter.clock_offset)
    from jobkit.job_sets import RetrySet, ScheduledSet

    now = time.time() + seconds
    return ScheduledSet().move_due(now=now) + RetrySet().move_due(now=now)


# -- picking jobs: only=, except_=, queue=, at= ---------------------------------------------------

Pick = Callable[[EnqueuedJob], bool]


def _class_path_of(value: object, option: str) -> str:
    """The import path of a Job class given as a class or a path; TypeError/ValueError name
    the culprit."""
    if isinstance(value, str):
        try:
            return class_path(resolve_job_class(value))
        except JobkitError as exc:
            raise ValueError(f"{option}: {value!r} is not a Job class's import path ({exc})"
                             ) from None
    if isinstance(value, type) and issubclass(value, Job):
        return class_path(value)
    raise TypeError(f"{option} takes a Job class or its import path, a list of them, or a "
                    f"function of the recorded job; got {value!r}")


def _as_pick(selector: JobSelector, option: str) -> Pick:
    if isinstance(selector, str | type):
        path = _class_path_of(selector, option)
        return lambda record: record.job_class == path
    if isinstance(selector, Sequence | set | frozenset):
        paths = {_class_path_of(item, option) for item in selector}
        return lambda record: record.job_class in paths
    if callable(selector):
        return lambda record: bool(selector(record))
    raise TypeError(f"{option} takes a Job class or its import path, a list of them, or a "
                    f"function of the recorded job; got {selector!r}")


def _timestamp(at: datetime | float) -> float:
    return at.timestamp() if isinstance(at, datetime) else float(at)


def _picker(job: JobFilter = None, queue: str | None = None, only: JobSelector | None = None,
            except_: JobSelector | None = None, at: datetime | float | None = None) -> Pick:
    """One test for the records a helper looks at (every one by default)."""
    if only is not None and except_ is not None:
        raise ValueError("give only= or except_=, not both")
    if job is not None and (only is not None or except_ is not None):
        raise ValueError("give job= or only=/except_=, not both (job=X is only=X)")
    tests: list[Pick] = []
    if job is not None:
        tests.append(lambda record: record.matches(job))
    if only is not None:
        tests.append(_as_pick(only, "only="))
    if except_ is not None:
        excluded = _as_pick(except_, "except_=")
        tests.append(lambda record: not excluded(record))
    if queue is not None:
        tests.append(lambda record: record.queue == queue)
    if at is not None:
        limit = _timestamp(at)
        tests.append(lambda record: record.at is None or record.at <= limit)
    return lambda record: all(test(record) for test in tests)


def _describe(record: EnqueuedJob, performed: bool = False) -> str:
    """One line for a failure message: class, arguments as they travel, queue, when, priority."""
    shown = ", ".join([*(repr(a) for a in record.payload.get("args", [])),
                       *(f"{k}={v!r}" for k, v in record.payload.get("kwargs", {}).items())])
    line = f"{record.job_class}({shown}) queue={record.queue!r}"
    if record.at is not None:
        when = datetime.fromtimestamp(record.at, UTC).isoformat(timespec="seconds")
        line += f" at={when.replace('+00:00', 'Z')}"
    if record.priority is not None:
        line += f" priority={record.priority}"
    return line + (" (performed)" if performed else "")


def _listing(records: list[EnqueuedJob], label: str,
             performed: Sequence[EnqueuedJob] = ()) -> str:
    lines = "\n".join(f"  {_describe(r, any(r is p for p in performed))}" for r in records)
    return f"{label}:\n{lines or '  (none)'}"


# -- performing recorded jobs --------------------------------------------------------------------

@contextlib.contextmanager
def _perform_during(pick: Pick | None = None) -> Iterator[None]:
    """Inside the block, each job enqueued that `pick` accepts is performed at once; the
    others are recorded (also in inline mode), as in Rails' filtered block."""
    adapter = _recorder()
    outer = adapter.perform_now  # an enclosing block's own
    adapter.perform_now = pick or (lambda record: True)
    try:
        yield
    finally:
        adapter.perform_now = outer


def _perform_recorded(pick: Pick) -> int:
    """Perform the recorded jobs `pick` accepts, oldest first, and the ones they enqueue that
    it accepts, until none is left; returns how many."""
    adapter = _recorder()
    count = 0
    while ready := next((r for r in adapter.enqueued if pick(r)), None):
        adapter.enqueued.remove(ready)
        adapter.perform(ready)
        count += 1
    return count


def perform_enqueued_jobs(only: JobSelector | None = None, except_: JobSelector | None = None,
                          queue: str | None = None, at: datetime | float | None = None
                          ) -> AbstractContextManager[None]:
    """As a call: perform the recorded jobs (and what they enqueue) now. As ``with``: perform
    each job enqueued inside the block at once. `only`/`except_`/`queue` pick the jobs, `at`
    leaves those scheduled after it recorded (Rails' filters)."""
    pick = _picker(None, queue, only, except_, at)
    if not _used_as_context_manager():
        _perform_recorded(pick)
    return _perform_during(pick)


# -- assertions ------------------------------------------------------------------------------

def _used_as_context_manager() -> bool:
    """Whether our caller's caller wrote ``with <call>:`` (CPython 3.11+ bytecode), directly or
    through functions that return the call's result (``return assert_enqueued_jobs(1)``).
    Otherwise the assertion runs now and still returns its block form's context manager, so
    a block entered some other way (``ExitStack.enter_context``) is checked too: one name
    serves Rails' plain and block forms, and neither silently checks nothing."""
    frame = sys._getframe(2)
    while frame is not None:
        following = [i.opname for i in dis.get_instructions(frame.f_code)  # caches skipped
                     if i.offset > frame.f_lasti][:2]
        if following[:1] in (["BEFORE_WITH"], ["SETUP_WITH"]):  # CPython 3.11 to 3.13
            return True
        if following == ["COPY", "LOAD_SPECIAL"]:  # CPython 3.14
            return True
        if following[:1] != ["RETURN_VALUE"]:
            return False
        frame = frame.f_back  # returned as is: how does the caller use it?
    return False


class _Counting(AbstractContextManager[None]):
    """Check a count over what a block recorded (mail)."""

    def __init__(self, count: Callable[[], int], expected: int, what: str,
                 shown: Callable[[], str]) -> None:
        self.count, self.expected, self.what, self.shown = count, expected, what, shown

    def __enter__(self) -> None:
        self.before = self.count()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            _check_count(self.count() - self.before, self.expected, self.what, self.shown)


def _check_count(actual: int, expected: int, what: str, shown: Callable[[], str]) -> None:
    if actual != expected:
        raise AssertionError(f"expected {expected} {what}, got {actual}\n{shown()}")


def _count_assertion(counting: _Counting, as_block: bool) -> AbstractContextManager[None]:
    """The block form's context manager, after (plain call) the check done now."""
    if not as_block:
        _check_count(counting.count(), counting.expected, counting.what, counting.shown)
    return counting


class _CountingJobs(AbstractContextManager[None]):
    """Check how many records `pick` accepts: of `records()` now (`check`), or of those
    `block_records()` gained during a block (``with``)."""

    def __init__(self, adapter: TestAdapter, records: Callable[[], list[EnqueuedJob]],
                 block_records: Callable[[], list[EnqueuedJob]], pick: Pick, expected: int,
                 what: str, label: str) -> None:
        self.adapter, self.records, self.block_records = adapter, records, block_records
        self.pick, self.expected, self.what, self.label = pick, expected, what, label

    def check(self, records: list[EnqueuedJob], label: str) -> None:
        actual = len([r for r in records if self.pick(r)])
        if actual != self.expected:
            listing = _listing(records, label, self.adapter.performed)
            raise AssertionError(f"expected {self.expected} {self.what}, got {actual}\n"
                                 f"{listing}")

    def now(self) -> AbstractContextManager[None]:
        """The plain form: check now; a block entered afterwards is checked on its own."""
        self.check(self.records(), self.label)
        return self

    def __enter__(self) -> None:
        self.before = list(self.block_records())  # kept alive: their ids stay theirs

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            earlier = {id(r) for r in self.before}
            self.check([r for r in self.block_records() if id(r) not in earlier],
                       f"{self.label.split(' ')[0]} in the block")


class _CountingPerformed(_CountingJobs):
    """Block form: jobs enqueued in the block that `pick` accepts are performed at once, as
    in Rails."""

    def __enter__(self) -> None:
        self.performing = _perform_during(self.pick)
        self.performing.__enter__()
        super().__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: Any) -> None:
        self.performing.__exit__(exc_type, *exc)
        super().__exit__(exc_type, *exc)


def _all_enqueued(adapter: TestAdapter) -> Callable[[], list[EnqueuedJob]]:
    """Jobs enqueued so far, waiting or performed."""
    return lambda: [*adapter.enqueued, *adapter.performed]


def _what(kind: str, job: JobFilter, queue: str | None, only: JobSelector | None,
          except_: JobSelector | None) -> str:
    parts = []
    for prefix, value in (("", job), ("only ", only), ("except ", except_)):
        if value is not None:
            parts.append(prefix + _selector_name(value))
    if queue is not None:
        parts.append(f"on queue {queue!r}")
    return f"{kind} job(s)" + (f" ({' '.join(parts)})" if parts else "")


def _selector_name(value: object) -> str:
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence | set | frozenset):
        return "[" + ", ".join(_selector_name(v) for v in value) + "]"
    return getattr(value, "__name__", repr(value))


def assert_enqueued_jobs(n: int, job: JobFilter = None, queue: str | None = None, *,
                         only: JobSelector | None = None, except_: JobSelector | None = None
                         ) -> AbstractContextManager[None]:
    """Jobs enqueued (performed ones included): as a call, so far; as ``with``, by the block.
    `job`/`only`/`except_`/`queue` say which count."""
    adapter = _recorder()
    counting = _CountingJobs(adapter, _all_enqueued(adapter), _all_enqueued(adapter),
                             _picker(job, queue, only, except_), n,
                             _what("enqueued", job, queue, only, except_), "enqueued")
    return counting if _used_as_context_manager() else counting.now()


def assert_no_enqueued_jobs(job: JobFilter = None, queue: str | None = None, *,
                            only: JobSelector | None = None,
                            except_: JobSelector | None = None
                            ) -> AbstractContextManager[None]:
    """As a call: no job is waiting to be performed. As ``with``: the block enqueued none
    (whether or not it was performed since)."""
    adapter = _recorder()
    counting = _CountingJobs(adapter, lambda: list(adapter.enqueued), _all_enqueued(adapter),
                             _picker(job, queue, only, except_), 0,
                             _what("enqueued", job, queue, only, except_), "waiting")
    return counting if _used_as_context_manager() else counting.now()


def assert_performed_jobs(n: int, job: JobFilter = None, queue: str | None = None, *,
                          only: JobSelector | None = None, except_: JobSelector | None = None
                          ) -> AbstractContextManager[None]:
    """As a call: jobs performed so far. As ``with``: jobs performed in the block, where every
    job enqueued that `job`/`only`/`except_`/`queue` pick is performed at once."""
    adapter = _recorder()
    counting = _CountingPerformed(
        adapter, lambda: list(adapter.performed), lambda: list(adapter.performed),
        _picker(job, queue, only, except_), n,
        _what("performed", job, queue, only, except_), "performed")
    return counting if _used_as_context_manager() else counting.now()


def assert_no_performed_jobs(job: JobFilter = None, queue: str | None = None, *,
                             only: JobSelector | None = None,
                             except_: JobSelector | None = None
                             ) -> AbstractContextManager[None]:
    """As a call: no job performed so far. As ``with``: none performed in the block, where
    every job enqueued that the filters pick is performed at once (Rails' block form)."""
    return assert_performed_jobs(0, job, queue, only=only, except_=except_)  # as is: `with` seen


def _wire(value: Any) -> Any:
    """Compare arguments as they travel: records by reference, not by object identity."""
    return serialize_value(value, "expected")


@dataclasses.dataclass(eq=False, repr=False)
class MatchedJob(EnqueuedJob, AbstractContextManager["MatchedJob"]):
    """The job `assert_enqueued_with` / `assert_performed_with` found: an `EnqueuedJob` equal
    to the record (same payload), not the record itself: compare with ==. In their ``with``
    form it is filled in when the block ends; before, it has no payload."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EnqueuedJob):
            return self.payload == other.payload
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as EnqueuedJob: mutable, unhashable

    def __repr__(self) -> str:
        return _describe(self) if self.payload else "MatchedJob(<filled in when the block ends>)"

    def __exit__(self, *exc: object) -> None:
        return None


Field = Callable[[Any], bool]


def _field_matches(expected: Any, actual: Callable[[], Any], wire: bool = False) -> bool:
    if callable(expected):
        return bool(expected(actual()))
    return actual() == (_wire(expected) if wire else expected)


def _with(records: list[EnqueuedJob], label: str, job: JobFilter,
          args: Sequence[Any] | Field | None, kwargs: Mapping[str, Any] | Field | None,
          queue: str | Field | None, at: datetime | float | Field | None,
          priority: int | Field | None, performed: Sequence[EnqueuedJob] = ()) -> EnqueuedJob:
    if isinstance(args, str | bytes):
        raise TypeError(f"args is the list of positional arguments, not {args!r}")
    for record in records:
        if not record.matches(job):
            continue
        if args is not None and not (
                args(record.args) if callable(args)
                else record.payload["args"] == _wire(list(args))):
            continue
        if kwargs is not None and not (
                kwargs(record.kwargs) if callable(kwargs)
                else record.payload["kwargs"] == _wire(dict(kwargs))):
            continue
        if queue is not None and not _field_matches(queue, lambda r=record: r.queue):
            continue
        if priority is not None and not _field_matches(priority, lambda r=record: r.priority):
            continue
        if at is not None and not _at_matches(at, record):
            continue
        return record
    wanted = {k: v for k, v in dict(job=job, args=args, kwargs=kwargs, queue=queue, at=at,
                                     priority=priority).items() if v is not None}
    headline = (f"no job {label} matches" if label.endswith(" in the block")
                else f"no {label} job matches")
    raise AssertionError(f"{headline} {wanted}\n{_listing(records, label, performed)}")


def _at_matches(at: datetime | float | Field, record: EnqueuedJob) -> bool:
    """`at` within a second of the job's; a function gets the job's as an aware datetime
    (None for a job to run now)."""
    if callable(at):
        when = None if record.at is None else datetime.fromtimestamp(record.at, UTC)
        return bool(at(when))
    return record.at is not None and abs(record.at - _timestamp(at)) <= 1


class _ExpectingWith(AbstractContextManager[None]):
    """Block form of the `_with` assertions: match among the jobs the block enqueued (or
    performed), and fill `found` in with the match."""

    def __init__(self, found: MatchedJob, records: Callable[[], list[EnqueuedJob]],
                 label: str, match: Callable[[list[EnqueuedJob]], EnqueuedJob],
                 performing: AbstractContextManager[None] | None = None) -> None:
        self.found, self.records, self.label, self.match = found, records, label, match
        self.performing = performing

    def __enter__(self) -> None:
        if self.performing is not None:
            self.performing.__enter__()
        self.before = list(self.records())

    def __exit__(self, exc_type: type[BaseException] | None, *exc: Any) -> None:
        if self.performing is not None:
            self.performing.__exit__(exc_type, *exc)
        if exc_type is None:
            earlier = {id(r) for r in self.before}
            record = self.match([r for r in self.records() if id(r) not in earlier])
            self.found.payload = record.payload  # shared, as the plain form's
            self.found.clock_offset = record.clock_offset


class _NotYet(dict[str, Any]):
    """The payload of a block form's job until the block ends: reading it says so."""

    def __missing__(self, key: str) -> Any:
        raise RuntimeError("the job of `with assert_enqueued_with(...) as job:` (or "
                           "assert_performed_with) is filled in when the block ends")


class _BlockMatch(MatchedJob):
    """What ``with assert_enqueued_with(...) as job:`` gives: `job`, filled in at the end. The
    plain form gives one too, already filled in: entered anyway (``ExitStack``), it checks
    the block as well and then holds the block's job."""

    def __enter__(self) -> MatchedJob:
        self.expecting.__enter__()
        return self

    expecting: _ExpectingWith

    def __exit__(self, *exc: Any) -> None:
        self.expecting.__exit__(*exc)


def assert_enqueued_with(job: JobFilter = None, args: Sequence[Any] | Field | None = None,
                         kwargs: Mapping[str, Any] | Field | None = None,
                         queue: str | Field | None = None,
                         at: datetime | float | Field | None = None,
                         priority: int | Field | None = None) -> MatchedJob:
    """A recorded job matching every given field (`at` within a second; a field may be a
    function of the job's value); returns it. As ``with ... as job:``, a job the block
    enqueued; `job` is filled in at the end of the block."""
    adapter = _recorder()

    def match(records: list[EnqueuedJob], label: str = "enqueued") -> EnqueuedJob:
        return _with(records, label, job, args, kwargs, queue, at, priority,
                     adapter.performed)

    found = _found(match, _all_enqueued(adapter)(), _used_as_context_manager())
    found.expecting = _ExpectingWith(found, _all_enqueued(adapter), "enqueued",
                                     lambda records: match(records, "enqueued in the block"))
    return found


def _found(match: Callable[[list[EnqueuedJob]], EnqueuedJob], so_far: list[EnqueuedJob],
           as_block: bool) -> _BlockMatch:
    """The block form's job to fill in, or (plain call) the job matched now."""
    if as_block:
        return _BlockMatch(_NotYet())
    record = match(so_far)
    return _BlockMatch(record.payload, record.clock_offset)


def assert_performed_with(job: JobFilter = None, args: Sequence[Any] | Field | None = None,
                          kwargs: Mapping[str, Any] | Field | None = None,
                          queue: str | Field | None = None,
                          at: datetime | float | Field | None = None,
                          priority: int | Field | None = None) -> MatchedJob:
    """A performed job matching every given field, as `assert_enqueued_with`; returns it. As
    ``with ... as job:``, every job the block enqueues is performed at once and `job` is one
    of them, filled in at the end of the block."""
    adapter = _recorder()

    def match(records: list[EnqueuedJob], label: str = "performed") -> EnqueuedJob:
        return _with(records, label, job, args, kwargs, queue, at, priority,
                     adapter.performed)

    found = _found(match, list(adapter.performed), _used_as_context_manager())
    found.expecting = _ExpectingWith(found, lambda: list(adapter.performed), "performed",
                                     lambda records: match(records, "performed in the block"),
                                     _perform_during())
    return found


# -- mail ----------------------------------------------------------------------------------------

@functools.cache
def _is_mail_job(path: str) -> bool:
    """Whether a recorded job class is a mail delivery job (MailDeliveryJob or a mailer's
    own `delivery_job` subclass)."""
    from jobkit.mailer.job import MailDeliveryJob

    try:
        return issubclass(resolve_job_class(path), MailDeliveryJob)
    except JobkitError:
        return False


def _mail_jobs(records: list[EnqueuedJob], queue: str | None = None) -> list[EnqueuedJob]:
    return [r for r in records if _is_mail_job(r.job_class) and r.matches(None, queue)]


def outbox() -> list[EmailMessage]:
    """Mail delivered with the `test` delivery method, oldest first."""
    from jobkit.mailer import deliveries

    return deliveries


def _mail_listing() -> str:
    return "delivered:\n" + ("\n".join(f"  {m['Subject']!r} to {m['To']}" for m in outbox())
                             or "  (none)")


def _deliver_mail(queue: str | None = None, earlier: frozenset[int] = frozenset()) -> None:
    """Perform the recorded mail jobs waiting (on `queue`), except the records in `earlier`."""
    adapter = adapters.current_adapter()
    if not isinstance(adapter, TestAdapter):
        return
    for record in [r for r in _mail_jobs(adapter.enqueued, queue) if id(r) not in earlier]:
        adapter.enqueued.remove(record)
        adapter.perform(record)


class _DeliveringMail(AbstractContextManager[None]):
    """Mail jobs enqueued in the block are delivered at its end, as in Rails."""

    def __init__(self, queue: str | None = None) -> None:
        self.queue = queue

    def __enter__(self) -> None:
        adapter = adapters.current_adapter()
        self.earlier = frozenset(id(r) for r in getattr(adapter, "enqueued", []))

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            _deliver_mail(self.queue, self.earlier)


class _CountingEmails(_Counting):
    """Block form: mail jobs enqueued in the block are delivered at its end, as in Rails."""

    def __enter__(self) -> None:
        self.delivering = _DeliveringMail()
        self.delivering.__enter__()
        super().__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.delivering.__exit__(exc_type, *exc)
        super().__exit__(exc_type, *exc)


def assert_emails(n: int) -> AbstractContextManager[None]:
    """Mail delivered: as a call, so far; as ``with``, by the block (its deliver_later mail
    is delivered at the end of the block)."""
    return _count_assertion(_CountingEmails(lambda: len(outbox()), n, "email(s)",
                                            _mail_listing), _used_as_context_manager())


def assert_no_emails() -> AbstractContextManager[None]:
    """No mail delivered: as a call, so far; as ``with``, by the block."""
    return _count_assertion(_CountingEmails(lambda: len(outbox()), 0, "email(s)",
                                            _mail_listing), _used_as_context_manager())


def deliver_enqueued_emails(queue: str | None = None) -> AbstractContextManager[None]:
    """As a call: deliver every recorded mail job (on `queue`) now. As ``with``: deliver
    those the block enqueued, at its end."""
    if not _used_as_context_manager():
        _deliver_mail(queue)
    return _DeliveringMail(queue)


@contextlib.contextmanager
def capture_emails() -> Iterator[list[EmailMessage]]:
    """``with capture_emails() as mails:``: `mails` holds, after the block, the mail it
    delivered (its deliver_later mail is delivered at the end of the block)."""
    captured: list[EmailMessage] = []
    before = len(outbox())
    with _DeliveringMail():
        yield captured
    captured.extend(outbox()[before:])


def _mail_enqueued(adapter: TestAdapter) -> Callable[[], int]:
    return lambda: len(_mail_jobs([*adapter.enqueued, *adapter.performed]))


def _mail_waiting_listing(adapter: TestAdapter) -> Callable[[], str]:
    return lambda: _listing(_mail_jobs(adapter.enqueued), "mail jobs waiting")


def assert_enqueued_emails(n: int) -> AbstractContextManager[None]:
    """Mail jobs enqueued (delivered ones included): as a call, so far; as ``with``, by the
    block (nothing is delivered)."""
    adapter = _recorder()
    return _count_assertion(_Counting(_mail_enqueued(adapter), n, "enqueued email(s)",
                                      _mail_waiting_listing(adapter)),
                            _used_as_context_manager())


def assert_no_enqueued_emails() -> AbstractContextManager[None]:
    """As a call: no mail job is waiting to be delivered. As ``with``: the block enqueued
    none."""
    adapter = _recorder()
    if not _used_as_context_manager():
        _check_count(len(_mail_jobs(adapter.enqueued)), 0, "enqueued email(s)",
                     _mail_waiting_listing(adapter))
    return _Counting(_mail_enqueued(adapter), 0, "enqueued email(s)",
                     _mail_waiting_listing(adapter))


def assert_enqueued_email_with(action: Callable[..., Any],
                               args: Sequence[Any] | None = None,
                               params: Mapping[str, Any] | None = None,
                               queue: str | None = None) -> EnqueuedJob:
    """A recorded mail job for an action such as `UserMailer.welcome` (taken from the
    class, not called); `args`, `params` and `queue` are compared when given."""
    if not (isinstance(action, functools.partial) and action.args
            and isinstance(getattr(action.func, "__self__", None), type)):
        raise TypeError(f"assert_enqueued_email_with takes a mailer action such as "
                        f"UserMailer.welcome (not called), got {action!r}")
    mailer, name = action.func.__self__, action.args[0]
    path = class_path(mailer)
    adapter = _recorder()
    mail_jobs = _mail_jobs([*adapter.enqueued, *adapter.performed], queue)
    for record in mail_jobs:
        got_mailer, got_action, got_args, _kwargs, got_params = record.payload["args"]
        if (got_mailer, got_action) != (path, name):
            continue
        if args is not None and got_args != _wire(list(args)):
            continue
        if params is not None and got_params != _wire(dict(params)):
            continue
        return record
    raise AssertionError(f"no {mailer.__name__}.{name} mail enqueued with args={args} "
                         f"params={params} queue={queue}\n"
                         f"{_listing(mail_jobs, 'mail jobs')}")
