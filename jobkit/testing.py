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
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobkit import adapters
from jobkit.adapters.base import Adapter
from jobkit.adapters.inline import wire_copy
from jobkit.arguments import deserialize, serialize_value
from jobkit.config import current_settings, use_settings
from jobkit.job import Job, job_class_path

__all__ = [
    "EnqueuedJob",
    "FakeAdapter",
    "advance",
    "assert_emails",
    "assert_enqueued_email_with",
    "assert_enqueued_jobs",
    "assert_enqueued_with",
    "assert_no_emails",
    "assert_no_enqueued_jobs",
    "assert_performed_jobs",
    "assert_performed_with",
    "clear",
    "disable",
    "drain_all",
    "fake",
    "inline",
    "jobs",
    "outbox",
    "perform_enqueued_jobs",
    "performed",
]


@dataclass
class EnqueuedJob:
    """A recorded job, readable in assertions."""

    payload: dict[str, Any]

    @property
    def job_class(self) -> str:
        return self.payload["job_class"]

    @property
    def job_id(self) -> str:
        return self.payload["job_id"]

    @property
    def queue(self) -> str:
        return self.payload["queue_name"]

    @property
    def priority(self) -> int | None:
        return self.payload["priority"]

    @property
    def at(self) -> float | None:
        return self.payload["scheduled_at"]

    @property
    def args(self) -> list:
        return deserialize(self.payload["args"], self.payload["kwargs"])[0]

    @property
    def kwargs(self) -> dict:
        return deserialize(self.payload["args"], self.payload["kwargs"])[1]

    def __repr__(self) -> str:
        shown = ", ".join([*(repr(a) for a in self.payload["args"]),
                           *(f"{k}={v!r}" for k, v in self.payload["kwargs"].items())])
        when = f" at={self.at}" if self.at else ""
        return f"{self.job_class}({shown}) queue={self.queue!r}{when}"


class FakeAdapter(Adapter):
    """Records each job's payload (after a JSON round trip); performs only when told to."""

    name = "fake"

    def __init__(self, perform_at_enqueue: bool = False) -> None:
        self.enqueued: list[EnqueuedJob] = []
        self.performed: list[EnqueuedJob] = []
        self.perform_at_enqueue = perform_at_enqueue
        self.clock_offset = 0.0  # seconds `advance` has moved time forward

    def enqueue(self, job: Job) -> None:
        record = EnqueuedJob(wire_copy(job))
        if self.perform_at_enqueue:
            self.perform(record)
        else:
            self.enqueued.append(record)

    def perform(self, record: EnqueuedJob) -> Any:
        self.performed.append(record)
        return Job.deserialize(json.loads(json.dumps(record.payload))).perform_now()


# -- modes -------------------------------------------------------------------------------------

class _Mode(contextlib.ContextDecorator):
    def __init__(self, adapter: Callable[[], Adapter], test_mail: bool) -> None:
        self.make_adapter = adapter
        self.test_mail = test_mail
        self._saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> Adapter:
        adapter = self.make_adapter()
        settings = current_settings()
        previous = adapters.use_adapter(adapter)
        self._saved.append((previous, settings))
        if self.test_mail:
            use_settings(dataclasses.replace(
                settings, mailer={**settings.mailer, "delivery_method": "test"}))
            outbox().clear()
        return adapter

    def __exit__(self, *exc: Any) -> None:
        previous, settings = self._saved.pop()
        adapters.use_adapter(previous)
        use_settings(settings)


def fake() -> _Mode:
    """Record jobs instead of running them (Sidekiq::Testing.fake!)."""
    return _Mode(FakeAdapter, test_mail=True)


def inline() -> _Mode:
    """Perform each job at enqueue, after a JSON round trip (Sidekiq::Testing.inline!)."""
    return _Mode(lambda: FakeAdapter(perform_at_enqueue=True), test_mail=True)


def disable() -> _Mode:
    """Use the real broker (Sidekiq::Testing.disable!)."""
    return _Mode(lambda: adapters.build_adapter("celery"), test_mail=False)


def _fake_adapter() -> FakeAdapter:
    adapter = adapters.current_adapter()
    if not isinstance(adapter, FakeAdapter):
        raise RuntimeError("jobkit.testing: no fake or inline mode is active (use "
                           "`with jobkit.testing.fake():` or the jobkit_fake fixture)")
    return adapter


# -- reading and running recorded jobs -----------------------------------------------------------

def _matches(record: EnqueuedJob, job: type | str | None, queue: str | None) -> bool:
    name = job if isinstance(job, str) or job is None else job_class_path(job)
    return (name is None or record.job_class == name) and (queue is None or record.queue == queue)


def jobs(job: type | str | None = None, queue: str | None = None) -> list[EnqueuedJob]:
    """Recorded jobs not yet performed, optionally of one class and/or queue."""
    return [r for r in _fake_adapter().enqueued if _matches(r, job, queue)]


def performed(job: type | str | None = None, queue: str | None = None) -> list[EnqueuedJob]:
    return [r for r in _fake_adapter().performed if _matches(r, job, queue)]


def clear(job: type | str | None = None) -> None:
    """Forget recorded jobs (of one class, or all)."""
    adapter = _fake_adapter()
    adapter.enqueued[:] = [r for r in adapter.enqueued if not _matches(r, job, None)]


def drain_all(job: type | str | None = None, until: float | None = None) -> int:
    """Perform recorded jobs, and the jobs they enqueue, until none is left; returns how many.

    `until` (a Unix time) leaves jobs scheduled after it recorded, to travel in time."""
    adapter = _fake_adapter()
    count = 0
    while True:
        ready = [r for r in adapter.enqueued if _matches(r, job, None)
                 and (until is None or (r.at or 0) <= until)]
        if not ready:
            return count
        record = ready[0]
        adapter.enqueued.remove(record)
        adapter.perform(record)
        count += 1


def advance(seconds: float) -> int:
    """Move time forward for scheduled jobs, without sleeping.

    Fake mode: perform every recorded job due by then (calls add up). Real broker: push
    every scheduled or retrying job due within `seconds` to its queue now. Returns how many."""
    adapter = adapters.current_adapter()
    if isinstance(adapter, FakeAdapter):
        adapter.clock_offset += seconds  # successive calls add up, as time would
        return drain_all(until=time.time() + adapter.clock_offset)
    from jobkit.job_sets import RetrySet, ScheduledSet

    now = time.time() + seconds
    return ScheduledSet().move_due(now=now) + RetrySet().move_due(now=now)


@contextlib.contextmanager
def _perform_during() -> Iterator[None]:
    adapter = _fake_adapter()
    before, adapter.perform_at_enqueue = adapter.perform_at_enqueue, True
    try:
        yield
    finally:
        adapter.perform_at_enqueue = before


def perform_enqueued_jobs() -> Any:
    """As a call: perform every recorded job (and what they enqueue). As ``with``: perform
    each job enqueued inside the block at once."""
    if _used_as_context_manager():
        return _perform_during()
    return drain_all()


# -- assertions ------------------------------------------------------------------------------

def _used_as_context_manager() -> bool:
    """Whether our caller's caller wrote ``with <call>:`` (CPython 3.11+ bytecode); otherwise
    the assertion runs now. This lets one name serve Rails' plain and block forms without an
    assertion that silently checks nothing."""
    frame = sys._getframe(2)
    following = [i.opname for i in dis.get_instructions(frame.f_code)  # caches are skipped
                 if i.offset > frame.f_lasti][:2]
    if following[:1] in (["BEFORE_WITH"], ["SETUP_WITH"]):  # CPython 3.11 to 3.13
        return True
    return following == ["COPY", "LOAD_SPECIAL"]  # CPython 3.14


class _Counting:
    """Check a count over what a block recorded."""

    def __init__(self, count: Callable[[], int], expected: int, what: str,
                 shown: Callable[[], str]) -> None:
        self.count, self.expected, self.what, self.shown = count, expected, what, shown

    def __enter__(self) -> None:
        self.before = self.count()

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            _check_count(self.count() - self.before, self.expected, self.what, self.shown)


def _check_count(actual: int, expected: int, what: str, shown: Callable[[], str]) -> None:
    if actual != expected:
        raise AssertionError(f"expected {expected} {what}, got {actual}\n{shown()}")


def _count_assertion(count: Callable[[], int], expected: int, what: str,
                     shown: Callable[[], str], as_block: bool) -> Any:
    if as_block:
        return _Counting(count, expected, what, shown)
    _check_count(count(), expected, what, shown)
    return None


def _listing(records: list[EnqueuedJob], label: str) -> str:
    lines = "\n".join(f"  {r!r}" for r in records) or "  (none)"
    return f"{label}:\n{lines}"


def assert_enqueued_jobs(n: int, job: type | str | None = None, queue: str | None = None
                         ) -> Any:
    adapter = _fake_adapter()
    return _count_assertion(
        lambda: len([r for r in [*adapter.enqueued, *adapter.performed]
                     if _matches(r, job, queue)]),
        n, f"enqueued job(s){_which(job, queue)}",
        lambda: _listing(adapter.enqueued, "enqueued"), _used_as_context_manager())


def assert_no_enqueued_jobs(job: type | str | None = None, queue: str | None = None) -> Any:
    adapter = _fake_adapter()
    return _count_assertion(
        lambda: len([r for r in adapter.enqueued if _matches(r, job, queue)]),
        0, f"enqueued job(s){_which(job, queue)}",
        lambda: _listing(adapter.enqueued, "enqueued"), _used_as_context_manager())


class _CountingPerformed(_Counting):
    """Block form: jobs enqueued in the block are performed at once, as in Rails."""

    def __enter__(self) -> None:
        self.performing = _perform_during()
        self.performing.__enter__()
        super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.performing.__exit__(*exc)
        super().__exit__(*exc)


def assert_performed_jobs(n: int, job: type | str | None = None, queue: str | None = None
                          ) -> Any:
    """As a call: jobs performed so far. As ``with``: jobs performed in the block, where every
    job enqueued is performed at once."""
    adapter = _fake_adapter()
    count = lambda: len([r for r in adapter.performed if _matches(r, job, queue)])  # noqa: E731
    shown = lambda: _listing(adapter.performed, "performed")  # noqa: E731
    what = f"performed job(s){_which(job, queue)}"
    if _used_as_context_manager():
        return _CountingPerformed(count, n, what, shown)
    _check_count(count(), n, what, shown)
    return None


def _which(job: type | str | None, queue: str | None) -> str:
    parts = []
    if job is not None:
        parts.append(job if isinstance(job, str) else job.__name__)
    if queue is not None:
        parts.append(f"on queue {queue!r}")
    return f" ({' '.join(parts)})" if parts else ""


def _wire(value: Any) -> Any:
    """Compare arguments as they travel: records by reference, not by object identity."""
    return serialize_value(value, "expected")


def _with(records: list[EnqueuedJob], label: str, job: type | str | None, args: list | None,
          kwargs: dict | None, queue: str | None, at: datetime | float | None,
          priority: int | None) -> EnqueuedJob:
    wanted_at = at.timestamp() if isinstance(at, datetime) else at
    for record in records:
        if not _matches(record, job, queue):
            continue
        if args is not None and record.payload["args"] != _wire(list(args)):
            continue
        if kwargs is not None and record.payload["kwargs"] != _wire(kwargs):
            continue
        if priority is not None and record.priority != priority:
            continue
        if wanted_at is not None and (record.at is None or abs(record.at - wanted_at) > 1):
            continue
        return record
    wanted = {k: v for k, v in dict(job=job, args=args, kwargs=kwargs, queue=queue, at=at,
                                     priority=priority).items() if v is not None}
    raise AssertionError(f"no {label} job matches {wanted}\n{_listing(records, label)}")


def assert_enqueued_with(job: type | str | None = None, args: list | None = None,
                         kwargs: dict | None = None, queue: str | None = None,
                         at: datetime | float | None = None, priority: int | None = None
                         ) -> EnqueuedJob:
    """A recorded job matching every given field (`at` within a second); returns it."""
    adapter = _fake_adapter()
    return _with([*adapter.enqueued, *adapter.performed], "enqueued", job, args, kwargs, queue,
                 at, priority)


def assert_performed_with(job: type | str | None = None, args: list | None = None,
                          kwargs: dict | None = None, queue: str | None = None,
                          at: datetime | float | None = None, priority: int | None = None
                          ) -> EnqueuedJob:
    return _with(_fake_adapter().performed, "performed", job, args, kwargs, queue, at,
                 priority)


# -- mail ----------------------------------------------------------------------------------------

MAIL_JOB = "jobkit.mailer.job.MailDeliveryJob"

def outbox() -> list:
    """Mail delivered with the `test` delivery method, oldest first."""
    from jobkit.mailer import deliveries

    return deliveries


def _mail_listing() -> str:
    return "delivered:\n" + ("\n".join(f"  {m['Subject']!r} to {m['To']}" for m in outbox())
                             or "  (none)")


class _CountingEmails(_Counting):
    """Block form: mail jobs enqueued in the block are delivered at its end, as in Rails."""

    def __enter__(self) -> None:
        adapter = adapters.current_adapter()
        self.earlier = {id(r) for r in getattr(adapter, "enqueued", [])}
        super().__enter__()

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        adapter = adapters.current_adapter()
        if exc_type is None and isinstance(adapter, FakeAdapter):
            for record in [r for r in adapter.enqueued if id(r) not in self.earlier
                           and _matches(r, MAIL_JOB, None)]:
                adapter.enqueued.remove(record)
                adapter.perform(record)
        super().__exit__(exc_type, *exc)


def assert_emails(n: int) -> Any:
    """Mail delivered: as a call, so far; as ``with``, by the block (its deliver_later mail
    is delivered at the end of the block)."""
    if _used_as_context_manager():
        return _CountingEmails(lambda: len(outbox()), n, "email(s)", _mail_listing)
    _check_count(len(outbox()), n, "email(s)", _mail_listing)
    return None


def assert_no_emails() -> Any:
    if _used_as_context_manager():
        return _CountingEmails(lambda: len(outbox()), 0, "email(s)", _mail_listing)
    _check_count(len(outbox()), 0, "email(s)", _mail_listing)
    return None


def assert_enqueued_email_with(action: Any, args: list | None = None,
                               params: dict | None = None) -> EnqueuedJob:
    """A recorded MailDeliveryJob for `UserMailer.welcome` (the action, as on the class)."""
    mailer, name = action.func.__self__, action.args[0]
    path = f"{mailer.__module__}.{mailer.__qualname__}"
    adapter = _fake_adapter()
    mail_jobs = [r for r in [*adapter.enqueued, *adapter.performed]
                 if _matches(r, MAIL_JOB, None)]
    for record in mail_jobs:
        got_mailer, got_action, got_args, _kwargs, got_params = record.payload["args"]
        if (got_mailer, got_action) != (path, name):
            continue
        if args is not None and got_args != _wire(list(args)):
            continue
        if params is not None and got_params != _wire(params):
            continue
        return record
    raise AssertionError(f"no {mailer.__name__}.{name} mail enqueued with args={args} "
                         f"params={params}\n"
                         f"{_listing(mail_jobs, 'mail jobs')}")
