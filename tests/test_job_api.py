"""The Job API in-process, on the `test` and `inline` adapters (no Redis)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

import jobkit
from jobkit import Job, JobClassError, SerializationError
from jobkit.adapters.celery import CeleryAdapter
from jobkit.adapters.test import TestAdapter
from tests.job_examples import (
    EVENTS,
    AddJob,
    ArgsJob,
    ChildTracedJob,
    DynamicQueueJob,
    GuardedJob,
    TracedJob,
)


@pytest.fixture
def recorded() -> Iterator[TestAdapter]:
    adapter = TestAdapter()
    previous = jobkit.use_adapter(adapter)
    EVENTS.clear()
    yield adapter
    jobkit.use_adapter(previous)


@pytest.fixture
def inline() -> Iterator[None]:
    previous = jobkit.use_adapter("inline")
    EVENTS.clear()
    yield
    jobkit.use_adapter(previous)


def test_perform_later_returns_the_enqueued_job(recorded: TestAdapter) -> None:
    job = AddJob.perform_later(1, 2)
    assert isinstance(job, AddJob)
    assert job.successfully_enqueued
    assert job.queue_name == "storage_analysis" and job.priority == 3
    assert job.scheduled_at is None
    assert job.enqueued_at.tzinfo is not None
    [record] = recorded.enqueued
    payload = record.payload
    assert payload["job_class"] == "tests.job_examples.AddJob"
    assert payload["job_id"] == job.job_id
    assert payload["args"] == [1, 2]


def test_set_overrides_queue_and_priority(recorded: TestAdapter) -> None:
    job = AddJob.set(queue="mailers", priority=7).perform_later(1)
    assert (job.queue_name, job.priority) == ("mailers", 7)
    assert recorded.enqueued[0].queue == "mailers"


@pytest.mark.parametrize("wait", [300, 300.0, dt.timedelta(minutes=5)])
def test_wait_schedules_in_the_future(recorded: TestAdapter, wait: object) -> None:
    before = dt.datetime.now(dt.UTC)
    job = AddJob.set(wait=wait).perform_later(1)
    assert dt.timedelta(seconds=299) < job.scheduled_at - before < dt.timedelta(seconds=302)


def test_wait_until_and_sidekiq_aliases(recorded: TestAdapter) -> None:
    noon = dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert AddJob.set(wait_until=noon).perform_later(1).scheduled_at == noon
    assert AddJob.perform_at(noon, 1).scheduled_at == noon
    assert AddJob.perform_at(noon.timestamp(), 1).scheduled_at == noon
    assert AddJob.perform_in(dt.timedelta(hours=1), 1).scheduled_at > dt.datetime.now(dt.UTC)
    assert AddJob.perform_async(1).scheduled_at is None
    assert len(recorded.enqueued) == 5


def test_naive_wait_until_is_refused_and_nothing_enqueued(recorded: TestAdapter) -> None:
    with pytest.raises(ValueError, match="naive"):
        AddJob.set(wait_until=dt.datetime(2030, 1, 1)).perform_later(1)
    with pytest.raises(ValueError, match="naive"):
        AddJob.perform_at(dt.datetime(2030, 1, 1), 1)
    assert recorded.enqueued == []


def test_wait_and_wait_until_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        AddJob.set(wait=1, wait_until=dt.datetime.now(dt.UTC))


@pytest.mark.parametrize("call", [
    lambda: AddJob.perform_later(),
    lambda: AddJob.perform_later(1, 2, 3),
    lambda: AddJob.perform_later(1, nope=2),
    lambda: AddJob.set(wait=5).perform_later(),
    lambda: AddJob.perform_bulk([[1], []]),
    lambda: jobkit.perform_all_later([AddJob(1), AddJob()]),
])
def test_unbindable_arguments_raise_type_error_and_enqueue_nothing(
        recorded: TestAdapter, call) -> None:
    with pytest.raises(TypeError, match=r"AddJob\.perform\(\)"):
        call()
    assert recorded.enqueued == []


def test_unserializable_argument_enqueues_nothing(recorded: TestAdapter) -> None:
    with pytest.raises(SerializationError, match=r"kwargs\['scale'\]: object of type object"):
        AddJob.perform_later(1, scale=object())
    assert recorded.enqueued == []


def test_perform_now_runs_in_process_and_returns_the_value(recorded: TestAdapter) -> None:
    assert AddJob.perform_now(2, 3, scale=10) == 50
    assert AddJob(4).perform_now() == 4
    assert AddJob.set(queue="x").perform_now(1, 1) == 2
    assert recorded.enqueued == []


def test_perform_now_checks_arguments() -> None:
    with pytest.raises(TypeError, match="missing"):
        AddJob.perform_now()


def test_queue_as_callable_sees_the_job(recorded: TestAdapter) -> None:
    assert DynamicQueueJob.perform_later(11).queue_name == "urgent"
    assert DynamicQueueJob.perform_later(1).queue_name == "default"


def test_callbacks_run_in_active_job_order(inline: None) -> None:
    job = TracedJob.perform_later("hi")
    assert job.successfully_enqueued
    assert EVENTS == [
        "before_enqueue", "around_enqueue:in",
        "before_perform:1", "around_perform:in", "perform:hi", "around_perform:out",
        "after_perform",
        "around_enqueue:out", "after_enqueue:True",
    ]


def test_subclass_callbacks_run_after_the_parents(recorded: TestAdapter) -> None:
    assert ChildTracedJob.perform_now("x") == "X"
    assert EVENTS[:2] == ["before_perform:1", "child_before_perform"]


def test_abort_in_before_enqueue_enqueues_nothing(recorded: TestAdapter) -> None:
    job = GuardedJob.perform_later(-1)
    assert job.successfully_enqueued is False
    assert recorded.enqueued == []


def test_abort_in_before_perform_skips_perform(recorded: TestAdapter) -> None:
    assert GuardedJob.perform_now(0) is None
    assert GuardedJob.perform_now(2) == 2
    assert EVENTS == ["guarded 2"]


def test_perform_all_later_and_bulk(recorded: TestAdapter) -> None:
    jobs = jobkit.perform_all_later([AddJob(1), ArgsJob("x", k=1)])
    assert [j.successfully_enqueued for j in jobs] == [True, True]
    assert [r.job_class.rsplit(".", 1)[1] for r in recorded.enqueued] == ["AddJob", "ArgsJob"]
    bulk = AddJob.perform_bulk([[1], [2, 3]])
    assert [r.args for r in recorded.enqueued[2:]] == [[1], [2, 3]]
    assert len({j.job_id for j in bulk}) == 2


def test_perform_all_later_takes_jobs_only(recorded: TestAdapter) -> None:
    with pytest.raises(TypeError, match="takes Job instances"):
        jobkit.perform_all_later([AddJob])


def test_inline_adapter_round_trips_arguments(inline: None) -> None:
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    job = ArgsJob.perform_later((1, 2), {3: when}, flag={"a"})
    assert job.successfully_enqueued


def test_inline_adapter_raises_what_production_would(inline: None) -> None:
    with pytest.raises(SerializationError):
        ArgsJob.perform_later(object())


def test_async_adapter_performs_on_a_thread() -> None:
    from jobkit.adapters.async_ import AsyncAdapter

    adapter = AsyncAdapter(threads=1)
    previous = jobkit.use_adapter(adapter)
    EVENTS.clear()
    try:
        DynamicQueueJob.perform_later(3)
        DynamicQueueJob.set(wait=0.2).perform_later(4)
        adapter.executor.submit(lambda: None).result(timeout=5)
        assert EVENTS == ["ran 3"]
    finally:
        jobkit.use_adapter(previous)
    import time

    deadline = time.monotonic() + 5
    while EVENTS != ["ran 3", "ran 4"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert EVENTS == ["ran 3", "ran 4"]
    adapter.shutdown()


def test_class_options_are_checked_at_definition() -> None:
    with pytest.raises(ValueError, match="priority must be an int"):
        type("BadPriority", (Job,), {"priority": "high"})
    with pytest.raises(JobClassError, match="queue_as"):
        type("BadQueue", (Job,), {"queue_as": ""})


def test_unknown_adapter_lists_the_choices() -> None:
    with pytest.raises(jobkit.ConfigError, match="choose one of celery, inline, test, async"):
        jobkit.use_adapter("sqs")


def test_celery_adapter_refuses_classes_a_worker_cannot_import() -> None:
    class LocalJob(Job):
        def perform(self) -> None:
            pass

    previous = jobkit.use_adapter(CeleryAdapter())
    try:
        with pytest.raises(JobClassError, match="cannot be imported by a worker"):
            LocalJob.perform_later()
    finally:
        jobkit.use_adapter(previous)


def test_job_without_perform_says_so(recorded: TestAdapter) -> None:
    class Abstract(Job):
        pass

    with pytest.raises(NotImplementedError, match="must define perform"):
        Abstract.perform_now()


def test_nested_job_classes_resolve_by_path(inline: None) -> None:
    from jobkit.job import resolve_job_class
    from tests.job_examples import Outer

    assert resolve_job_class("tests.job_examples.Outer.NestedJob") is Outer.NestedJob
    assert Outer.NestedJob.perform_later(2).successfully_enqueued


@pytest.mark.parametrize("path, message", [
    ("tests.job_examples.Nope", "module tests.job_examples has no Nope"),
    ("no_such_package.jobs.X", "No module named 'no_such_package'"),
    ("tests.job_examples.EVENTS", "is not a jobkit Job class"),
    ("justaname", "is not an import path"),
])
def test_unresolvable_job_paths_say_why(path: str, message: str) -> None:
    from jobkit.job import resolve_job_class

    with pytest.raises(JobClassError, match=message):
        resolve_job_class(path)


def test_callbacks_are_registered_by_name_like_rails(recorded: TestAdapter) -> None:
    from tests.job_examples import ChildCallbacks

    ChildCallbacks.perform_now()
    assert EVENTS == ["child y", "child z", "perform"]  # in first-definition order


def test_abort_raised_by_perform_is_an_error_not_a_halt(recorded: TestAdapter) -> None:
    from tests.job_examples import AbortingPerformJob

    with pytest.raises(jobkit.Abort, match="from perform"):
        AbortingPerformJob.perform_now()


def test_enum_a_worker_cannot_import_is_refused_at_enqueue(recorded: TestAdapter) -> None:
    import enum

    class Local(enum.Enum):
        A = 1

    with pytest.raises(SerializationError, match=r"args\[0\]: enum .*Local cannot be imported"):
        ArgsJob.perform_later(Local.A)


@pytest.mark.parametrize(("name", "value", "hint"), [
    ("queue", "low", "did you mean queue_as?"),
    ("retry", 3, "did you mean max_retries?"),
    ("max_retires", 1, "did you mean max_retries?"),
    ("priorty", 1, "did you mean priority?"),
    ("queue_ass", lambda job: "low", "did you mean queue_as?"),
    ("timeout", 30, "is not a job option (did you mean time_limit (soft) or hard_time_limit?)"),
    ("sleep_for", 30, "is not a job option. The options:"),
])
def test_an_unknown_class_option_is_refused_when_the_class_is_defined(
        name: str, value: object, hint: str) -> None:
    with pytest.raises(JobClassError) as refused:
        type("TypoJob", (Job,), {name: value, "perform": lambda self: None})
    message = str(refused.value)
    assert message.startswith(f"TypoJob.{name} = ")
    assert hint in message
    assert "declare it with an annotation" in message


def test_methods_constants_private_and_declared_attributes_are_not_options() -> None:
    from typing import ClassVar

    class TenantJob(Job):
        tenant: ClassVar[str] = "acme"  # declared: the user's own
        BATCH = 100
        _cache: dict = {}
        queue_as = staticmethod(lambda job: "default")

        class Config:
            pass

        @property
        def label(self) -> str:
            return self.tenant

        def perform(self) -> str:
            return self.tenant

    class OtherTenantJob(TenantJob):
        tenant = "globex"  # declared by a parent: an option here

    assert OtherTenantJob.perform_now() == "globex"
    with pytest.raises(JobClassError, match="did you mean tenant"):
        type("TypoTenantJob", (TenantJob,), {"tenants": "x"})


def test_an_annotation_without_a_value_declares_an_attribute_for_subclasses() -> None:
    from typing import ClassVar

    class DeclaringJob(Job):
        tenant: ClassVar[str]

        def perform(self) -> str:
            return self.tenant

    class AcmeJob(DeclaringJob):
        tenant = "acme"

    assert AcmeJob.perform_now() == "acme"


@pytest.mark.parametrize(("attributes", "problem"), [
    ({"retry_in": 30}, "replaces a method of the same name with data"),
    ({"perform": None}, "replaces a method of the same name with data"),
    ({"MAX_RETRIES": 3}, "is the option max_retries in capitals"),
    ({"dead": "no"}, "dead must be True or False"),
    ({"backtrace": "all"}, "backtrace must be a whole number of lines >= 0"),
    ({"backtrace": -1}, "backtrace must be a whole number of lines >= 0"),
])
def test_options_that_cannot_work_are_refused(attributes: dict, problem: str) -> None:
    with pytest.raises(JobClassError, match=problem):
        type("BadJob", (Job,), {"perform": lambda self: None, **attributes})


def test_callables_that_are_not_lambdas_are_not_options() -> None:
    import functools

    class HelperJob(Job):
        measure = len
        double = functools.partial(lambda factor, x: factor * x, 2)

        def perform(self, text: str) -> int:
            return self.double(self.measure(text))

    assert HelperJob.perform_now("abc") == 6


def test_perform_parameters_may_share_names_with_the_enqueue_methods(
        recorded: TestAdapter) -> None:
    class NamesJob(Job):
        def perform(self, cls: str, interval: int = 0, when: str = "") -> str:
            return f"{cls}{interval}{when}"

    assert NamesJob.perform_now(cls="a", interval=1, when="b") == "a1b"
    NamesJob.perform_later(cls="x")
    NamesJob.perform_in(5, cls="y", interval=2)
    NamesJob.set(queue="default").perform_later(cls="z")
    assert [r.kwargs for r in recorded.enqueued] == [
        {"cls": "x"}, {"cls": "y", "interval": 2}, {"cls": "z"}]


def test_jobs_is_absent_outside_a_recording_adapter() -> None:
    previous = jobkit.use_adapter("inline")
    try:
        assert not hasattr(AddJob, "jobs")
        with pytest.raises(jobkit.NotRecordingError, match="not recorded with the 'inline'"):
            AddJob.drain()
    finally:
        jobkit.use_adapter(previous)


def test_an_option_in_capitals_is_not_told_to_use_capitals() -> None:
    with pytest.raises(JobClassError) as refused:
        type("ShoutJob", (Job,), {"MAX_RETRIES": 3, "perform": lambda self: None})
    assert str(refused.value).endswith("declare it with an annotation "
                                       "(`MAX_RETRIES: ClassVar[...] = ...`).")
