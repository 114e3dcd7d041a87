"""The Job base class: Active Job's API (and Sidekiq's aliases) over jobkit's adapters.

The class methods are typed against each subclass's `perform`, so a type checker sees
``MyJob.perform_later(...)`` return a ``MyJob`` and checks its arguments (see `_Performs`).
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    ParamSpec,
    Protocol,
    Self,
    TypeVar,
    cast,
    overload,
)

from jobkit import arguments, callbacks, transactions
from jobkit.adapters import Adapter, current_adapter
from jobkit.batch import scope as batch_scope
from jobkit.controls.options import (
    Concurrency,
    Debounce,
    UniqueConflict,
    UniqueUntil,
    check_controls,
    controls_of,
)
from jobkit.coroutines import run_to_completion
from jobkit.errors import JobClassError, NotUniqueError
from jobkit.imports import class_path, import_object
from jobkit.job_options import check_class_options
from jobkit.payload import Payload, from_timestamp, to_timestamp
from jobkit.queues import DEFAULT_QUEUE
from jobkit.time_limits import soft_limit, time_limits

if TYPE_CHECKING:
    from jobkit.adapters.test import EnqueuedJob
    from jobkit.limiter import Limiter
    from jobkit.retries import DiscardOn, RetryOn

__all__ = ["ConfiguredJob", "Job", "perform_all_later", "resolve_job_class"]


Seconds = int | float | dt.timedelta
When = dt.datetime | int | float

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
J = TypeVar("J", bound="Job")
J_co = TypeVar("J_co", bound="Job", covariant=True)
T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class _Performs(Protocol[P, R_co, J_co]):
    """What a type checker reads off a Job subclass: `perform`'s parameters (P) and result
    (R), and the class itself (J, from `enqueue`, which returns the job)."""

    def perform(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def enqueue(self, *, wait: Seconds | None = None, wait_until: When | None = None,
                queue: str | None = None, priority: int | None = None,
                time_limit: Seconds | None = None,
                hard_time_limit: Seconds | None = None) -> J_co: ...


class _WithOptions(Protocol[T_co]):
    """`set(...)`: the enqueue options, checked by name."""

    def __call__(self, *, wait: Seconds | None = None, wait_until: When | None = None,
                 queue: str | None = None, priority: int | None = None,
                 time_limit: Seconds | None = None,
                 hard_time_limit: Seconds | None = None) -> T_co: ...


class _Set:
    """`MyJob.set(...)` binds options to the class (a ConfiguredJob); `job.set(...)` applies
    them to that job (e.g. for `perform_all_later`)."""

    @overload
    def __get__(self, obj: None, owner: type[_Performs[P, R, J]]
                ) -> _WithOptions[ConfiguredJob[P, R, J]]: ...

    @overload
    def __get__(self, obj: J, owner: Any) -> _WithOptions[J]: ...

    def __get__(self, obj: Any, owner: Any) -> Any:
        if obj is None:
            return functools.partial(ConfiguredJob, owner)
        return obj._set_options


class _PerformNow:
    """`MyJob.perform_now(*args)` builds and runs a job; `job.perform_now()` runs that one.
    Either returns what `perform` returns; for an `async def perform`, what it returns once
    awaited (the coroutine is run to its end)."""

    @overload
    def __get__(self, obj: None, owner: type[_Performs[P, Coroutine[Any, Any, T], Any]]
                ) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: None, owner: type[_Performs[P, R, Any]]) -> Callable[P, R]: ...

    @overload
    def __get__(self, obj: _Performs[..., Coroutine[Any, Any, T], Any], owner: Any
                ) -> Callable[[], T]: ...

    @overload
    def __get__(self, obj: _Performs[..., R, Any], owner: Any) -> Callable[[], R]: ...

    def __get__(self, obj: Any, owner: Any) -> Any:
        if obj is None:
            return owner._perform_new
        return obj._perform_this


class _RecordedJobs:
    """`MyJob.jobs` in tests: the recorded jobs of that class (Sidekiq's `HardJob.jobs`)."""

    def __get__(self, obj: Any, owner: type[Job]) -> list[EnqueuedJob]:
        return current_adapter().recorder().jobs(owner)


class Job:
    """Subclass, define ``perform(self, ...)``, then ``MyJob.perform_later(...)``.

    Class options: ``queue_as`` (a queue name, or a callable taking the job), ``priority``
    (0 runs first; None for the queue's default), ``max_retries``, ``dead``, ``backtrace``;
    the controls ``unique_for`` / ``unique_until`` / ``unique_by`` / ``unique_conflict``,
    ``limits_concurrency``, ``debounce`` and ``limiter`` (docs/controls.md);
    ``enqueue_after_transaction_commit`` (jobkit.transactions).
    Any other lower-case class attribute holding data is refused when the class is defined
    (a typo would be ignored otherwise); declare your own with an annotation.
    """

    queue_as: str | Callable[[Any], str] = DEFAULT_QUEUE  # a method `def queue_as(self)` too
    priority: int | None = None
    #: Retries after the first failure before the dead set; None: the `max_retries` setting.
    max_retries: ClassVar[int | None] = None
    #: False: a job out of retries is dropped instead of kept in the dead set.
    dead: ClassVar[bool] = True
    #: Backtrace lines kept with a failure in the retry and dead sets (0: none).
    backtrace: ClassVar[int] = 20
    #: Unique jobs: a second enqueue of the same key within this many seconds (or timedelta,
    #: counted from when the job is due) is not enqueued. None: not unique.
    unique_for: ClassVar[float | dt.timedelta | None] = None
    #: When the lock goes: as the job starts, or once it succeeded (failed for good, too).
    unique_until: ClassVar[UniqueUntil] = "success"
    #: The unique key (from the job); None: the class and all the arguments.
    unique_by: ClassVar[Callable[[Any], Any] | None] = None
    #: A duplicate is skipped (`successfully_enqueued` False), or raises NotUniqueError.
    unique_conflict: ClassVar[UniqueConflict] = "skip"
    #: At most `to` jobs with the same key run at once; the others wait in order.
    limits_concurrency: ClassVar[Concurrency | None] = None
    #: Of the jobs with the same key in a window, only the last runs, at its end.
    debounce: ClassVar[Debounce | None] = None
    #: Rate limiters (jobkit.limiter) every run must pass before `perform`, on a worker.
    limiter: ClassVar[Limiter | tuple[Limiter, ...] | None] = None
    #: Seconds (or timedelta) a run may take before SoftTimeLimitExceeded is raised in it.
    time_limit: float | dt.timedelta | None = None
    #: Seconds (or timedelta) after which the run is stopped (its process killed, on prefork).
    hard_time_limit: float | dt.timedelta | None = None
    #: Enqueued inside a database transaction: held until it commits (True) or sent at once
    #: (False); None: the `enqueue_after_transaction_commit` setting (jobkit.transactions).
    enqueue_after_transaction_commit: ClassVar[bool | None] = None
    #: Set by the @retry_on / @discard_on class decorators (jobkit.retries), newest first.
    failure_rules: ClassVar[tuple[RetryOn | DiscardOn, ...]] = ()

    _callbacks: ClassVar[dict[str, list[str]]] = callbacks.collect(object)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_class_options(cls)
        if not (isinstance(cls.queue_as, str) and cls.queue_as) and not callable(cls.queue_as):
            raise JobClassError(f"{cls.__qualname__}.queue_as must be a queue name or a callable")
        _check_priority(cls.priority, f"{cls.__qualname__}.priority")
        if cls.max_retries is not None and (type(cls.max_retries) is not int
                                            or cls.max_retries < 0):
            raise JobClassError(f"{cls.__qualname__}.max_retries must be a whole number >= 0")
        if type(cls.dead) is not bool:
            raise JobClassError(f"{cls.__qualname__}.dead must be True or False, "
                                f"not {cls.dead!r}")
        if type(cls.backtrace) is not int or cls.backtrace < 0:
            raise JobClassError(f"{cls.__qualname__}.backtrace must be a whole number of "
                                f"lines >= 0, not {cls.backtrace!r}")
        if cls.enqueue_after_transaction_commit is not None \
                and type(cls.enqueue_after_transaction_commit) is not bool:
            raise JobClassError(f"{cls.__qualname__}.enqueue_after_transaction_commit must be "
                                f"True, False or None, not "
                                f"{cls.enqueue_after_transaction_commit!r}")
        check_controls(cls)
        time_limits(cls.time_limit, cls.hard_time_limit, JobClassError, f"{cls.__qualname__}.")
        _check_perform(cls)
        cls._callbacks = callbacks.collect(cls)

    def __init__(self: _Performs[P, Any, Any], /, *args: P.args, **kwargs: P.kwargs) -> None:
        """A job with the arguments `perform` will get (checked at enqueue and, by a type
        checker, here)."""
        cast(Job, self)._setup(list(args), kwargs)

    def _setup(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.arguments: list[Any] = args
        self.kwargs: dict[str, Any] = kwargs
        self.job_id: str = str(uuid.uuid4())
        self.provider_job_id: str | None = None
        self.queue_name: str | None = None
        self.priority: int | None = type(self).priority
        self.executions: int = 0
        self.enqueued_at: dt.datetime | None = None
        self.scheduled_at: dt.datetime | None = None
        self.successfully_enqueued: bool = False
        #: Set when a unique job was not enqueued: the id of the job that holds its lock.
        self.duplicate_of: str | None = None
        #: True while the job is held until the caller's transaction commits (then sent, or
        #: dropped by a rollback); `successfully_enqueued` stays False until it is sent.
        self.waiting_for_commit: bool = False
        #: What stopped a job held for a commit from being sent after it (also logged).
        self.enqueue_error: BaseException | None = None
        #: The batch this job belongs to (jobkit.Batch; `Batch.open(self.batch_id)` adds jobs
        #: to it while this job runs), or None.
        self.batch_id: str | None = None
        # This job's limits in seconds (the class's, or set(...)'s), or None.
        cls = type(self)
        self.time_limit, self.hard_time_limit = time_limits(cls.time_limit, cls.hard_time_limit,
                                                            JobClassError)

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} must define perform()")

    # -- in tests (the `test` adapter, fake and inline modes: see jobkit.testing) ------------

    jobs: ClassVar[_RecordedJobs] = _RecordedJobs()

    @classmethod
    def drain(cls) -> int:
        """Perform this class's recorded jobs (also those of this class they enqueue) until
        none is left; other classes' jobs stay recorded, as in Sidekiq."""
        return current_adapter().recorder().drain(cls)

    @classmethod
    def clear(cls) -> None:
        """Forget this class's recorded jobs."""
        current_adapter().recorder().clear(cls)

    # -- cancellation (jobkit.cancel) --------------------------------------------------------

    #: Set by the worker running the job: reads its cancel mark (jobkit.cancellation.Probe).
    _cancel_probe: Callable[[], bool] | None = None

    @property
    def cancelled(self) -> bool:
        """Sidekiq's `cancelled?`: true once `jobkit.cancel(job_id)` was called for this job.
        On a worker it reads Redis at most once a second, however often it is asked; in the
        test modes it is true after `jobkit.cancel` there; otherwise false."""
        probe = self._cancel_probe
        return probe() if probe is not None else current_adapter().is_cancelled(self.job_id)

    # -- failure hooks (documented no-ops: override what you need) -----------------------------

    def retry_in(self, retry_count: int, error: BaseException) -> float | str | None:
        """Sidekiq's `sidekiq_retry_in`: seconds until the next try, "discard", "kill" (dead
        set now), or None for the default backoff. `retry_count` is 0 on the first failure."""
        return None

    def retries_exhausted(self, error: BaseException) -> None:
        """Sidekiq's `sidekiq_retries_exhausted`: called on the worker as the job goes dead."""

    def after_discard(self, error: BaseException) -> None:
        """Active Job's `after_discard`: called on the worker when a job is discarded."""

    def __repr__(self) -> str:
        return f"<{class_path(type(self))} {self.job_id} queue={self.queue_name!r}>"

    # -- enqueueing ---------------------------------------------------------------------------

    @classmethod
    def perform_later(cls: type[_Performs[P, Any, J]], /, *args: P.args, **kwargs: P.kwargs
                      ) -> J:
        """Enqueue a job with these arguments; returns the job (see `successfully_enqueued`)."""
        return cls(*args, **kwargs).enqueue()

    set: ClassVar[_Set] = _Set()
    set.__doc__ = """Enqueue options: ``MyJob.set(wait=300, queue="low").perform_later(1)``
    on the class; on a job (e.g. for `perform_all_later`), ``MyJob(1).set(queue="low")``."""

    @classmethod
    def perform_async(cls: type[_Performs[P, Any, J]], /, *args: P.args, **kwargs: P.kwargs
                      ) -> J:
        """Sidekiq's name for `perform_later`."""
        return cls(*args, **kwargs).enqueue()

    @classmethod
    def perform_in(cls: type[_Performs[P, Any, J]], interval: Seconds, /, *args: P.args,
                   **kwargs: P.kwargs) -> J:
        """Sidekiq: run after `interval` (seconds or timedelta)."""
        return cls(*args, **kwargs).enqueue(wait=interval)

    @classmethod
    def perform_at(cls: type[_Performs[P, Any, J]], when: When, /, *args: P.args,
                   **kwargs: P.kwargs) -> J:
        """Sidekiq: run at `when` (an aware datetime or Unix seconds)."""
        return cls(*args, **kwargs).enqueue(wait_until=when)

    @classmethod
    def perform_bulk(cls, args_list: Iterable[Iterable[Any]]) -> list[Self]:
        """Sidekiq: enqueue one job per argument list, in one round trip."""
        return perform_all_later([cls(*args) for args in args_list])

    def enqueue(self, *, wait: Seconds | None = None, wait_until: When | None = None,
                queue: str | None = None, priority: int | None = None,
                time_limit: Seconds | None = None,
                hard_time_limit: Seconds | None = None) -> Self:
        """Enqueue this job through the enqueue callbacks and the current adapter."""
        self._prepare(wait=wait, wait_until=wait_until, queue=queue, priority=priority,
                      time_limit=time_limit, hard_time_limit=hard_time_limit)
        callbacks.run_callbacks(self, "enqueue", self._enqueue_now)
        return self

    def _set_options(self, *, wait: Seconds | None = None, wait_until: When | None = None,
                     queue: str | None = None, priority: int | None = None,
                     time_limit: Seconds | None = None,
                     hard_time_limit: Seconds | None = None) -> Self:
        self._apply_options(wait=wait, wait_until=wait_until, queue=queue, priority=priority,
                            time_limit=time_limit, hard_time_limit=hard_time_limit)
        return self

    def _enqueue_now(self) -> None:
        self.duplicate_of = None
        if batch_scope.join((self,)):  # inside `with jobkit.Batch(...)`: sent with its chunk
            return
        adapter = current_adapter()
        if transactions.hold([self], lambda jobs: _send(adapter, jobs, bulk=False)):
            return  # sent after the caller's transaction commits
        _send(adapter, [self], bulk=False)

    def _prepare(self, *, wait: Seconds | None = None, wait_until: When | None = None,
                 queue: str | None = None, priority: int | None = None,
                 time_limit: Seconds | None = None,
                 hard_time_limit: Seconds | None = None) -> None:
        """Apply options and refuse, before anything is sent, a call that could never run."""
        self.check_arguments()
        self._apply_options(wait=wait, wait_until=wait_until, queue=queue, priority=priority,
                            time_limit=time_limit, hard_time_limit=hard_time_limit)
        if self.queue_name is None:
            self.queue_name = self._queue_from_class()
        self.enqueued_at = dt.datetime.now(dt.UTC)

    def _apply_options(self, *, wait: Seconds | None, wait_until: When | None,
                       queue: str | None, priority: int | None,
                       time_limit: Seconds | None = None,
                       hard_time_limit: Seconds | None = None) -> None:
        if time_limit is not None or hard_time_limit is not None:
            self.time_limit, self.hard_time_limit = time_limits(
                time_limit if time_limit is not None else self.time_limit,
                hard_time_limit if hard_time_limit is not None else self.hard_time_limit,
                ValueError)
        if wait is not None or wait_until is not None:
            self.scheduled_at = _due_time(wait, wait_until)
        if queue is not None:
            if not isinstance(queue, str) or not queue:
                raise ValueError(f"queue must be a non-empty string, got {queue!r}")
            self.queue_name = queue
        if priority is not None:
            _check_priority(priority, "priority")
            self.priority = priority

    def _queue_from_class(self) -> str:
        queue_as = type(self).queue_as
        name = queue_as if isinstance(queue_as, str) else queue_as(self)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{type(self).__qualname__}.queue_as returned {name!r}")
        return name

    def check_arguments(self) -> None:
        """TypeError, naming the job, when `perform` could never accept these arguments."""
        try:
            _perform_signature(type(self)).bind(None, *self.arguments, **self.kwargs)
        except TypeError as exc:
            raise TypeError(f"{type(self).__qualname__}.perform(): {exc}") from None

    # -- the payload -----------------------------------------------------------------------

    def serialize(self) -> dict[str, Any]:
        """The payload dict for this job; SerializationError names a bad argument."""
        args, kwargs = arguments.serialize(self.arguments, self.kwargs)
        cls = type(self)
        controlled = cls.unique_for is not None or cls.limits_concurrency is not None \
            or cls.debounce is not None
        limits = self._limits()
        return Payload(
            job_class=class_path(type(self)),
            job_id=self.job_id,
            queue_name=self.queue_name or DEFAULT_QUEUE,
            priority=self.priority,
            args=args,
            kwargs=kwargs,
            executions=self.executions,
            enqueued_at=to_timestamp(self.enqueued_at),
            scheduled_at=to_timestamp(self.scheduled_at),
            controls=controls_of(self, args, kwargs) if controlled else None,
            time_limits=[*limits] if any(limits) else None,
            awaits=_is_async(cls),
            batch=self.batch_id,
        ).to_dict()

    @staticmethod
    def deserialize(data: Any, provider_job_id: str | None = None,
                    job_class: type[Job] | None = None) -> Job:
        """Rebuild a job from its payload: class located (or `job_class`, when the caller
        already knows the class the payload names), arguments (and records) loaded."""
        payload = Payload.from_dict(data)
        cls = job_class if job_class is not None and class_path(job_class) == payload.job_class \
            else resolve_job_class(payload.job_class)
        args, kwargs = arguments.deserialize(payload.args, payload.kwargs)
        job = cls(*args, **kwargs)
        job.job_id = payload.job_id
        job.provider_job_id = provider_job_id
        job.queue_name = payload.queue_name
        job.priority = payload.priority
        job.executions = payload.executions
        job.enqueued_at = from_timestamp(payload.enqueued_at)
        job.scheduled_at = from_timestamp(payload.scheduled_at)
        if payload.time_limits is not None:
            job.time_limit, job.hard_time_limit = payload.time_limits
        job.batch_id = payload.batch
        return job

    # -- performing ---------------------------------------------------------------------------

    def _perform_this(self) -> Any:
        self.executions += 1
        with batch_scope.running(self.batch_id):  # a Batch made in perform is a child of it
            _, result = callbacks.run_callbacks(self, "perform", self._call_perform)
        return result

    def _call_perform(self) -> Any:
        """`perform`'s result; an `async def perform` is run to its end (jobkit.coroutines).
        A `def perform`'s soft limit holds here in the threads of jobkit's thread pools
        (time_limits.soft_limit); an async one's in run_to_completion, so making its coroutine
        starts no timer thread (about 0.15 ms of CPU and 0.6 ms of wall time a run)."""
        soft, hard = self._limits()
        with soft_limit(None if inspect.iscoroutinefunction(self.perform) else soft):
            result = self.perform(*self.arguments, **self.kwargs)
        if inspect.isawaitable(result):
            return run_to_completion(result, soft, hard, self.job_id)
        return result

    def _limits(self) -> tuple[float | None, float | None]:
        """(time_limit, hard_time_limit) in seconds: a job holds them as seconds (_setup,
        _apply_options); the class may give timedeltas."""
        return cast(float | None, self.time_limit), cast(float | None, self.hard_time_limit)

    @classmethod
    def _perform_new(cls, /, *args: Any, **kwargs: Any) -> Any:
        job = cls(*args, **kwargs)
        job.check_arguments()
        job.queue_name = job._queue_from_class()
        return job._perform_this()

    perform_now: ClassVar[_PerformNow] = _PerformNow()


class ConfiguredJob(Generic[P, R_co, J]):
    """A job class with enqueue options bound, as returned by `Job.set(...)`."""

    def __init__(self, job_class: type[J], *, wait: Seconds | None = None,
                 wait_until: When | None = None, queue: str | None = None,
                 priority: int | None = None, time_limit: Seconds | None = None,
                 hard_time_limit: Seconds | None = None) -> None:
        _due_time(wait, wait_until)  # fail early on bad options
        time_limits(job_class.time_limit if time_limit is None else time_limit,
                    job_class.hard_time_limit if hard_time_limit is None else hard_time_limit,
                    ValueError, f"{job_class.__qualname__}.set(...): ")
        self.job_class = job_class
        self.options: dict[str, Any] = dict(wait=wait, wait_until=wait_until, queue=queue,
                                            priority=priority, time_limit=time_limit,
                                            hard_time_limit=hard_time_limit)

    def perform_later(self, /, *args: P.args, **kwargs: P.kwargs) -> J:
        return self.job_class(*args, **kwargs).enqueue(**self.options)

    def perform_async(self, /, *args: P.args, **kwargs: P.kwargs) -> J:
        """Sidekiq's name for `perform_later`."""
        return self.perform_later(*args, **kwargs)

    @overload
    def perform_now(self: ConfiguredJob[P, Coroutine[Any, Any, T], J], /, *args: P.args,
                    **kwargs: P.kwargs) -> T: ...

    @overload
    def perform_now(self, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def perform_now(self, /, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run now, in this process, on the bound queue and priority (a delay is ignored)."""
        job = self.job_class(*args, **kwargs)
        job._prepare(queue=self.options["queue"], priority=self.options["priority"],
                     time_limit=self.options["time_limit"],
                     hard_time_limit=self.options["hard_time_limit"])
        return job._perform_this()

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if v is not None)
        return f"<{self.job_class.__qualname__}.set({shown})>"


def perform_all_later(jobs: Iterable[J]) -> list[J]:
    """Enqueue many jobs in one round trip. As in Active Job, enqueue callbacks do not run."""
    jobs = list(jobs)
    for job in jobs:
        if not isinstance(job, Job):
            raise TypeError(f"perform_all_later takes Job instances, got {job!r}")
        job._prepare()
        job.duplicate_of = None
    if batch_scope.join(jobs):  # inside `with jobkit.Batch(...)`: sent in its chunks
        return jobs
    adapter = current_adapter()
    held = {id(job) for job in transactions.hold(jobs, lambda later: _send(adapter, later,
                                                                              bulk=True))}
    _send(adapter, [job for job in jobs if id(job) not in held], bulk=True)
    return jobs


def _send(adapter: Adapter, jobs: list[J], *, bulk: bool) -> None:
    """Send prepared jobs through `adapter` (one, or many in one round trip) and record the
    outcome on each."""
    if not jobs:
        return
    if not bulk:
        adapter.enqueue(jobs[0])
    else:
        adapter.enqueue_all(jobs)
    for job in jobs:
        job.successfully_enqueued = job.duplicate_of is None
    _raise_for_duplicates(jobs)


def _raise_for_duplicates(jobs: list[J]) -> None:
    """NotUniqueError for the duplicates of classes with ``unique_conflict = "raise"`` (the
    other jobs of a bulk enqueue are sent all the same)."""
    refused = [job for job in jobs if job.duplicate_of is not None
               and type(job).unique_conflict == "raise"]
    if refused:
        shown = ", ".join(f"{type(job).__qualname__} {job.job_id} (lock held by "
                          f"{job.duplicate_of})" for job in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise NotUniqueError(f"not enqueued, a job with the same unique key is enqueued or "
                             f"running: {shown}{more}", refused)


def resolve_job_class(path: str) -> type[Job]:
    """Import a Job subclass by its path (nested classes too); JobClassError says why not."""
    cls = import_object(path, "job class")
    if not (isinstance(cls, type) and issubclass(cls, Job)):
        raise JobClassError(f"{path} is not a jobkit Job class")
    return cls


@functools.cache
def _perform_signature(cls: type[Job]) -> inspect.Signature:
    return inspect.signature(cls.perform)


@functools.cache
def _is_async(cls: type[Job]) -> bool:
    """Whether the class's `perform` is `async def` (its soft time limit is jobkit's own)."""
    return inspect.iscoroutinefunction(cls.perform)


def _check_perform(cls: type[Job]) -> None:
    """A class's own `perform` must be a function (`def`) or a coroutine function (`async
    def`): anything else would be called and its result taken for the job's work (a generator
    would be created and never run)."""
    perform = vars(cls).get("perform")
    if perform is None:
        return
    kind = ("a generator function" if inspect.isgeneratorfunction(perform)
            else "an async generator function" if inspect.isasyncgenfunction(perform)
            else None if inspect.isfunction(perform) else f"{type(perform).__name__} {perform!r}")
    if kind is not None:
        raise JobClassError(f"{cls.__qualname__}.perform must be a method (`def perform(self, "
                            f"...)` or `async def perform(self, ...)`), not {kind}")


def _check_priority(priority: Any, what: str) -> None:
    if priority is not None and (type(priority) is not int):
        raise ValueError(f"{what} must be an int or None, got {priority!r}")


def _due_time(wait: Seconds | None, wait_until: When | None) -> dt.datetime | None:
    """When a delayed job is due (aware UTC), or None to run it now."""
    if wait is not None and wait_until is not None:
        raise ValueError("give wait or wait_until, not both")
    now = dt.datetime.now(dt.UTC)
    if wait is not None:
        if isinstance(wait, dt.timedelta):
            return now + wait
        if isinstance(wait, int | float) and not isinstance(wait, bool):
            return now + dt.timedelta(seconds=wait)
        raise TypeError(f"wait must be seconds or a timedelta, got {wait!r}")
    if wait_until is None:
        return None
    if isinstance(wait_until, dt.datetime):
        if wait_until.tzinfo is None or wait_until.utcoffset() is None:
            raise ValueError(
                f"wait_until={wait_until!r} is naive; pass an aware datetime "
                "(e.g. datetime.now(UTC) + timedelta(hours=1)) so the time is unambiguous"
            )
        return wait_until.astimezone(dt.UTC)
    if isinstance(wait_until, int | float) and not isinstance(wait_until, bool):
        return dt.datetime.fromtimestamp(wait_until, dt.UTC)
    raise TypeError(f"wait_until must be an aware datetime or Unix seconds, got {wait_until!r}")
