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
the block did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import dis
import functools
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
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


@contextlib.contextmanager
def _perform_during() -> Iterator[None]:
    adapter = _recorder()
    before, adapter.perform_at_enqueue = adapter.perform_at_enqueue, True
    try:
        yield
    finally:
        adapter.perform_at_enqueue = before


def perform_enqueued_jobs() -> AbstractContextManager[None]:
    """As a call: perform every recorded job (and what they enqueue) now. As ``with``:
    perform each job enqueued inside the block at once."""
    if _used_as_context_manager():
        return _perform_during()
    drain_all()
    return nullcontext()


# -- assertions ------------------------------------------------------------------------------

def _used_as_context_manager() -> bool:
    """Whether our caller's caller wrote ``with <call>:`` (CPython 3.11+ bytecode); otherwise
    the assertion runs now (and returns a context manager that does nothing). This lets one
    name serve Rails' plain and block forms without an assertion that silently checks
    nothing."""
    frame = sys._getframe(2)
    following = [i.opname for i in dis.get_instructions(frame.f_code)  # caches are skipped
                 if i.offset > frame.f_lasti][:2]
    if following[:1] in (["BEFORE_WITH"], ["SETUP_WITH"]):  # CPython 3.11 to 3.13
        return True
    return following == ["COPY", "LOAD_SPECIAL"]  # CPython 3.14


class _Counting(AbstractContextManager[None]):
    """Check a count over what a block recorded."""

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
    """The block form's context manager, or (plain call) the check done now."""
    if as_block:
        return counting
    _check_count(counting.count(), counting.expected, counting.what, counting.shown)
    return nullcontext()


def _listing(records: list[EnqueuedJob], label: str) -> str:
    lines = "\n".join(f"  {r!r}" for r in records) or "  (none)"
    return f"{label}:\n{lines}"


def assert_enqueued_jobs(n: int, job: JobFilter = None, queue: str | None = None
                         ) -> AbstractContextManager[None]:
    """Jobs enqueued (performed ones included): as a call, so far; as ``with``, by the block."""
    adapter = _recorder()
    return _count_assertion(_Counting(
        lambda: _enqueued_count(adapter, job, queue),
        n, f"enqueued job(s){_which(job, queue)}",
        lambda: _listing(adapter.enqueued, "enqueued")), _used_as_context_manager())


def assert_no_enqueued_jobs(job: JobFilter = None, queue: str | None = None
                            ) -> AbstractContextManager[None]:
    """As a call: no job is waiting to be performed. As ``with``: the block enqueued none
    (whether or not it was performed since)."""
    adapter = _recorder()
    what = f"enqueued job(s){_which(job, queue)}"
    shown = lambda: _listing(adapter.enqueued, "enqueued")  # noqa: E731
    if _used_as_context_manager():
        return _Counting(lambda: _enqueued_count(adapter, job, queue), 0, what, shown)
    _check_count(len(adapter.jobs(job, queue)), 0, what, shown)
    return nullcontext()


def _enqueued_count(adapter: TestAdapter, job: JobFilter, queue: str | None) -> int:
    """Jobs enqueued so far, performed or not."""
    return len([r for r in [*adapter.enqueued, *adapter.performed] if r.matches(job, queue)])


class _CountingPerformed(_Counting):
    """Block form: jobs enqueued in the block are performed at once, as in Rails."""

    def __enter__(self) -> None:
        self.performing = _perform_during()
        self.performing.__enter__()
        super().__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: Any) -> None:
        self.performing.__exit__(exc_type, *exc)
        super().__exit__(exc_type, *exc)


def assert_performed_jobs(n: int, job: JobFilter = None, queue: str | None = None
                          ) -> AbstractContextManager[None]:
    """As a call: jobs performed so far. As ``with``: jobs performed in the block, where every
    job enqueued is performed at once."""
    adapter = _recorder()
    counting = _CountingPerformed(
        lambda: len([r for r in adapter.performed if r.matches(job, queue)]),
        n, f"performed job(s){_which(job, queue)}",
        lambda: _listing(adapter.performed, "performed"))
    return _count_assertion(counting, _used_as_context_manager())


def _which(job: JobFilter, queue: str | None) -> str:
    parts = []
    if job is not None:
        parts.append(job if isinstance(job, str) else job.__name__)
    if queue is not None:
        parts.append(f"on queue {queue!r}")
    return f" ({' '.join(parts)})" if parts else ""


def _wire(value: Any) -> Any:
    """Compare arguments as they travel: records by reference, not by object identity."""
    return serialize_value(value, "expected")


def _with(records: list[EnqueuedJob], label: str, job: JobFilter, args: Sequence[Any] | None,
          kwargs: Mapping[str, Any] | None, queue: str | None, at: datetime | float | None,
          priority: int | None) -> EnqueuedJob:
    if isinstance(args, str | bytes):
        raise TypeError(f"args is the list of positional arguments, not {args!r}")
    wanted_at = at.timestamp() if isinstance(at, datetime) else at
    for record in records:
        if not record.matches(job, queue):
            continue
        if args is not None and record.payload["args"] != _wire(list(args)):
            continue
        if kwargs is not None and record.payload["kwargs"] != _wire(dict(kwargs)):
            continue
        if priority is not None and record.priority != priority:
            continue
        if wanted_at is not None and (record.at is None or abs(record.at - wanted_at) > 1):
            continue
        return record
    wanted = {k: v for k, v in dict(job=job, args=args, kwargs=kwargs, queue=queue, at=at,
                                     priority=priority).items() if v is not None}
    raise AssertionError(f"no {label} job matches {wanted}\n{_listing(records, label)}")


def assert_enqueued_with(job: JobFilter = None, args: Sequence[Any] | None = None,
                         kwargs: Mapping[str, Any] | None = None, queue: str | None = None,
                         at: datetime | float | None = None, priority: int | None = None
                         ) -> EnqueuedJob:
    """A recorded job matching every given field (`at` within a second); returns it."""
    adapter = _recorder()
    return _with([*adapter.enqueued, *adapter.performed], "enqueued", job, args, kwargs, queue,
                 at, priority)


def assert_performed_with(job: JobFilter = None, args: Sequence[Any] | None = None,
                          kwargs: Mapping[str, Any] | None = None, queue: str | None = None,
                          at: datetime | float | None = None, priority: int | None = None
                          ) -> EnqueuedJob:
    """A performed job matching every given field (`at` within a second); returns it."""
    return _with(_recorder().performed, "performed", job, args, kwargs, queue, at, priority)


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
    if _used_as_context_manager():
        return _DeliveringMail(queue)
    _deliver_mail(queue)
    return nullcontext()


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
    if _used_as_context_manager():
        return _Counting(_mail_enqueued(adapter), 0, "enqueued email(s)",
                         _mail_waiting_listing(adapter))
    _check_count(len(_mail_jobs(adapter.enqueued)), 0, "enqueued email(s)",
                 _mail_waiting_listing(adapter))
    return nullcontext()


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
