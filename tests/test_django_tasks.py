"""jobkit.contrib.django.JobkitBackend under Django's tasks framework (the django-tasks backport
on Django 5.2): checks and enqueueing against a private Redis, then Django's own tests/tasks
cases that matter on a worker, run by a real `jobkit worker` with DJANGO_SETTINGS_MODULE set."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from jobkit import keys
from jobkit.api import Queue
from jobkit.job_sets import DeadSet, RetrySet, ScheduledSet
from tests.conftest import start_worker, wait_for
from tests.doc_examples import DOCS, example_module, python_blocks, run

SETTINGS_MODULE = "tests.django_tasks_app.settings"


@pytest.fixture(scope="module")
def django_tasks_settings() -> Iterator[None]:
    """Django set up with the test project's settings (or, if another test module configured
    Django first, those settings with the test project's TASKS laid over them)."""
    import django
    from django.conf import settings
    from django.test import override_settings

    from tests.django_tasks_app import settings as project

    if not settings.configured:
        settings.configure(**{name: getattr(project, name) for name in dir(project)
                              if name.isupper()})
        django.setup()
    with override_settings(TASKS=project.TASKS):
        yield


@pytest.fixture
def tasks(django_tasks_settings: None, own_client: redis.Redis) -> Any:
    """The test project's tasks module, with jobkit pointing at the module's own Redis."""
    from tests.django_tasks_app import tasks as module

    return module


def strings(client: redis.Redis, key: str) -> list[str]:
    """The list at `key`, decoded (the fixture's client answers bytes)."""
    return [item.decode() for item in cast(list[bytes], client.lrange(key, 0, -1))]


def backend(**params: Any) -> Any:
    from jobkit.contrib.django import JobkitBackend

    return JobkitBackend("custom", {"BACKEND": "jobkit.contrib.django.JobkitBackend", **params})


def test_flags_and_options_are_checked_naming_the_culprit(django_tasks_settings: None) -> None:
    from django_tasks import task
    from django_tasks.exceptions import InvalidTaskBackendError, InvalidTaskError

    from jobkit.contrib.django import JobkitBackend
    from tests.django_tasks_app import tasks

    assert (JobkitBackend.supports_defer, JobkitBackend.supports_async_task,
            JobkitBackend.supports_get_result, JobkitBackend.supports_priority) == (
        True, True, True, True)
    with pytest.raises(InvalidTaskBackendError,
                       match=r"TASKS\['custom'\]\['OPTIONS'\] has unknown key\(s\) 'TTL'"):
        backend(OPTIONS={"TTL": 5})
    with pytest.raises(InvalidTaskBackendError, match=r"\['MAX_RETRIES'\] must be a whole "
                                                      r"number from 0 to 25, not 26"):
        backend(OPTIONS={"MAX_RETRIES": 26})
    with pytest.raises(InvalidTaskBackendError, match=r"\['RESULT_TTL'\] must be seconds"):
        backend(OPTIONS={"RESULT_TTL": "1 day"})
    assert backend(OPTIONS={"RESULT_TTL": dt.timedelta(hours=1)}).jobkit_options.result_ttl \
        == 3600
    with pytest.raises(InvalidTaskError, match=(
            r"Queue 'elsewhere' is not valid for backend \(tests.django_tasks_app.tasks."
            r"calculate_meaning_of_life, task backend 'default'\); its QUEUES are "
            r"'default', 'ordered'$")):
        tasks.calculate_meaning_of_life.using(queue_name="elsewhere")
    with pytest.raises(InvalidTaskError, match=r"aware datetime \(tests.django_tasks_app"
                                               r".tasks.get_task_id, task backend 'default'\)"):
        tasks.get_task_id.using(run_after=dt.datetime(2030, 1, 1))
    with pytest.raises(InvalidTaskError, match="priority must be a whole number"):
        tasks.get_task_id.using(priority=101)
    with pytest.raises(InvalidTaskError, match=r"module level \(builtins.any, task backend "):
        task()(any)
    with pytest.raises(InvalidTaskError, match=r"first argument of 'context' \(tests."
                                               r"django_tasks_app.tasks.calculate_meaning"):
        task(takes_context=True)(tasks.calculate_meaning_of_life.func)  # pyright: ignore[reportArgumentType]


def test_enqueue_stores_a_ready_result_and_sends_a_job(tasks: Any, own_client: redis.Redis
                                                       ) -> None:
    from django_tasks import TaskResultStatus, task_backends
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch

    from jobkit.contrib.django.store import result_key

    result = tasks.calculate_meaning_of_life.enqueue()
    assert result.status == TaskResultStatus.READY and not result.is_finished
    assert result.backend == "default" and result.enqueued_at is not None
    stored = task_backends["default"].get_result(result.id)
    assert (stored.id, stored.status, stored.task, stored.enqueued_at) == (
        result.id, TaskResultStatus.READY, tasks.calculate_meaning_of_life, result.enqueued_at)
    assert 590_000 < own_client.pttl(result_key(result.id)) <= 600_000  # RESULT_TTL 600
    with pytest.raises(ValueError, match="not finished"):
        stored.return_value  # noqa: B018
    # The job: a DjangoTaskJob in the task's queue; Django's priority 0 -> jobkit step 3.
    [queued] = Queue("default", own_client).jobs()
    assert queued.job_id == result.id
    assert queued.job_class == "jobkit.contrib.django.runner.DjangoTaskJob"
    assert own_client.llen(keys.list_key("default", 3)) == 1
    tasks.calculate_meaning_of_life.using(priority=10).enqueue()
    assert own_client.llen(keys.list_key("default", 0)) == 1

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    deferred = tasks.get_task_id.using(run_after=later).enqueue()
    [entry] = ScheduledSet(own_client)
    assert entry.job_id == deferred.id
    assert deferred.task.run_after == later
    assert own_client.pttl(result_key(deferred.id)) > 3_600_000  # outlives the wait

    async def both() -> tuple[Any, Any]:
        enqueued = await tasks.noop_task_async.aenqueue(1, two=(3, 4), three={4: None})
        return enqueued, await tasks.noop_task_async.aget_result(enqueued.id)

    enqueued, fetched = asyncio.run(both())
    # As JSON gives them back, in the returned result too (Django's own kept the key 4).
    assert (fetched.args, fetched.kwargs) == ([1], {"two": [3, 4], "three": {"4": None}}) \
        == (enqueued.args, enqueued.kwargs)
    original = dataclasses.asdict(enqueued)  # Django's test_refresh_result: a faithful store
    enqueued.refresh()
    assert dataclasses.asdict(enqueued) == original
    asyncio.run(enqueued.arefresh())
    assert dataclasses.asdict(enqueued) == original

    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result("no-such-id")
    with pytest.raises(TaskResultMismatch):
        tasks.get_task_id.get_result(result.id)
    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.noop_task_async.enqueue(object())
    signals = strings(own_client, "django-test:signals")
    assert f"enqueued:JobkitBackend:{result.id}:READY" in signals
    assert len(signals) == 4  # one per enqueue; the refused one sent nothing


def test_tasks_run_on_a_real_worker(tasks: Any, own_client: redis.Redis, tmp_path: Path
                                    ) -> None:
    """One worker (one process, so order shows) runs Django's cases and jobkit's: results and
    errors, takes_context, async, run_after through the scheduled set, priority, a retry,
    the dead set, the signals in the worker."""
    from django_tasks import TaskResultStatus

    from jobkit.contrib.django.store import result_key

    url = own_client.connection_pool.connection_kwargs
    redis_url = f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    ordered = Queue("ordered", own_client)
    ordered.pause()
    low = tasks.record_order.using(priority=-60).enqueue("low")
    tasks.record_order.enqueue("default")
    tasks.record_order.using(priority=50).enqueue("high")
    run_after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    deferred = tasks.calculate_meaning_of_life.using(run_after=run_after).enqueue()
    results = {
        "meaning": tasks.calculate_meaning_of_life.enqueue(),
        "async": tasks.noop_task_async.enqueue(1, two="x"),
        "value_error": tasks.failing_task_value_error.enqueue(),
        "system_exit": tasks.failing_task_system_exit.enqueue(),
        "complex_return": tasks.complex_return_value.enqueue(),
        "context": tasks.get_task_id.enqueue(),
        "retried": tasks.fail_on_first_attempt.enqueue(),
        "killed": tasks.killed.enqueue(),
        "receiver_fails": tasks.finished_receiver_fails.enqueue(),
        "bytes_return": tasks.bytes_return_value.enqueue(),
        "unprintable": tasks.unprintable_exit.enqueue(),
    }
    worker = start_worker(redis_url, tmp_path / "worker.log", "-c", "1", "-q", "default",
                          "-q", "ordered", env={"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE})
    try:
        ordered.resume()

        def finished(name: str) -> Any:
            result = results[name]
            result.refresh()
            return result.is_finished

        for name in ("meaning", "async", "value_error", "system_exit", "complex_return",
                     "context", "killed", "receiver_fails", "bytes_return", "unprintable"):
            wait_for(lambda name=name: finished(name), timeout=60, what=f"{name} finished")
        meaning = results["meaning"]
        assert meaning.status == TaskResultStatus.SUCCESSFUL and meaning.return_value == 42
        assert meaning.enqueued_at <= meaning.started_at <= meaning.finished_at
        assert meaning.last_attempted_at == meaning.started_at and meaning.attempts == 1
        assert meaning.worker_ids[0].startswith(socket.gethostname() + ":")
        assert results["async"].return_value == [[1], {"two": "x"}]
        assert results["context"].return_value == results["context"].id
        assert results["bytes_return"].return_value == {"raw": "café", "1": [2, 3]}

        for name, cls, text in (
                ("value_error", ValueError, "ValueError: This task failed due to ValueError\n"),
                ("system_exit", SystemExit, "SystemExit: This task failed due to SystemExit\n"),
                ("complex_return", TypeError, "Unsupported type"),
                ("unprintable", tasks.UnprintableExit, "UnprintableExit: <exception str()")):
            failed = results[name]
            assert failed.status == TaskResultStatus.FAILED, name
            with pytest.raises(ValueError, match="Task failed"):
                failed.return_value  # noqa: B018
            [error] = failed.errors
            assert error.exception_class is cls, name
            assert text in error.traceback, (name, error.traceback)
            assert failed.finished_at is not None
        # A run whose process was killed: the worker records the kill, without the task's code.
        killed = results["killed"]
        assert killed.status == TaskResultStatus.FAILED and killed.finished_at is not None
        assert [e.exception_class_path for e in killed.errors] == ["jobkit.errors.JobKilled"]
        dead = {entry.job_id for entry in DeadSet(own_client)}
        assert {results[n].id for n in ("value_error", "system_exit", "complex_return",
                                        "killed", "unprintable")} <= dead
        unprintable = DeadSet(own_client).find(results["unprintable"].id)
        assert unprintable is not None and unprintable.error_class == \
            "jobkit.contrib.django.runner.TaskInterrupted"  # though its str() raises
        # Sent again from the dead set: RUNNING afresh (no finished_at of the run before).
        failed = results["value_error"]
        entry = DeadSet(own_client).find(failed.id)
        assert entry is not None and DeadSet(own_client).push_now(entry)
        wait_for(lambda: (failed.refresh(), len(failed.errors) == 2)[1], timeout=30,
                 what="the second run of value_error")
        assert failed.status == TaskResultStatus.FAILED and failed.attempts == 2
        assert own_client.llen("django-test:stale") == 0

        # MAX_RETRIES 1: the first failure leaves it READY in the retry set, error kept.
        retried = results["retried"]
        wait_for(lambda: RetrySet(own_client).find(retried.id), timeout=30,
                 what="the failed attempt in the retry set")
        retried.refresh()
        assert retried.status == TaskResultStatus.READY and len(retried.errors) == 1
        # RESULT_TTL 12 s, the retry waits 15 s or more: the result is kept for the wait too.
        assert own_client.pttl(result_key(retried.id)) > 15_000
        entry = RetrySet(own_client).find(retried.id)
        assert entry is not None and RetrySet(own_client).push_now(entry)
        wait_for(lambda: finished("retried"), timeout=30, what="the retry to finish")
        assert retried.status == TaskResultStatus.SUCCESSFUL and retried.return_value == 2
        assert retried.attempts == 2 and retried.errors[0].exception_class is RuntimeError

        wait_for(lambda: (deferred.refresh(), deferred.is_finished)[1], timeout=30,
                 what="the deferred task")
        assert deferred.started_at >= run_after and deferred.return_value == 42
        # A task_finished receiver raised after a success: logged; the task is not run again.
        receiver_fails = results["receiver_fails"]
        assert receiver_fails.status == TaskResultStatus.SUCCESSFUL
        assert receiver_fails.attempts == 1 and receiver_fails.return_value == 7
        assert RetrySet(own_client).find(receiver_fails.id) is None
        assert DeadSet(own_client).find(receiver_fails.id) is None
        assert "a task_finished receiver failed" in worker.output()

        wait_for(lambda: own_client.llen("django-test:order") == 3, timeout=30,
                 what="the ordered tasks")
        assert strings(own_client, "django-test:order") == ["high", "default", "low"]
        wait_for(lambda: (low.refresh(), low.is_finished)[1], timeout=30, what="low finished")
        assert low.status == TaskResultStatus.SUCCESSFUL

        # Each signal is sent just after its result is written: wait for the last ones.
        retried_id = results["retried"].id
        expected = [f"started:JobkitBackend:{retried_id}:RUNNING",
                    f"started:JobkitBackend:{retried_id}:RUNNING",
                    f"finished:JobkitBackend:{retried_id}:SUCCESSFUL"]
        for name, status in (("meaning", "SUCCESSFUL"), ("value_error", "FAILED"),
                             ("killed", "FAILED")):
            expected += [f"started:JobkitBackend:{results[name].id}:RUNNING",
                         f"finished:JobkitBackend:{results[name].id}:{status}"]
        wait_for(lambda: set(expected) <= set(strings(own_client, "django-test:signals")),
                 timeout=30, what="the signals sent in the worker")
        signals = strings(own_client, "django-test:signals")
        assert [s for s in signals if retried_id in s and not s.startswith("enqueued")] \
            == expected[:3]
        assert "Traceback" not in worker.output().split("ready.")[0]  # Django set up cleanly
    finally:
        worker.stop()


def test_results_expire_after_result_ttl(tasks: Any, own_client: redis.Redis) -> None:
    from django.test import override_settings
    from django_tasks import task_backends
    from django_tasks.exceptions import TaskResultDoesNotExist

    from jobkit.contrib.django.store import result_key

    short = {"default": {"BACKEND": "jobkit.contrib.django.JobkitBackend",
                         "QUEUES": ["default", "ordered"], "OPTIONS": {"RESULT_TTL": 0.2}}}
    with override_settings(TASKS=short):
        result = tasks.calculate_meaning_of_life.enqueue()
        assert json.loads(cast(bytes, own_client.get(result_key(result.id))))["status"] \
            == "READY"
        wait_for(lambda: not own_client.exists(result_key(result.id)), timeout=10,
                 what="the result to expire")
        with pytest.raises(TaskResultDoesNotExist):
            task_backends["default"].get_result(result.id)
    # The job itself is still queued: expiry drops the result only.
    assert Queue("default", own_client).find(result.id) is not None


def test_celery_sets_django_up_in_jobkit_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Contract: Celery's Django fixup (django.setup() at worker start, database connections
    closed around each task) is installed on jobkit's app when DJANGO_SETTINGS_MODULE is set."""
    from celery.fixups.django import DjangoFixup

    from jobkit.config import current_settings
    from jobkit.worker.app import create_app

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    app = create_app(current_settings())
    assert any(isinstance(fixup, DjangoFixup) for fixup in app._fixups or ())  # noqa: SLF001


def test_the_examples_in_django_md_run(django_tasks_settings: None, own_client: redis.Redis
                                       ) -> None:
    """docs/django.md's python blocks in order: the settings (then applied), the tasks, the
    enqueueing (no worker: the jobs wait in the private Redis)."""
    from django.test import override_settings

    doc = DOCS / "django.md"
    settings_block, tasks_block, enqueue_block = python_blocks(doc.read_text())
    with example_module("docs_django_example") as module:
        run(settings_block, module, str(doc))
        with override_settings(TASKS=module.TASKS):
            run(tasks_block, module, str(doc))
            run(enqueue_block, module, str(doc))
            assert module.result.id == module.result_id
    [queued] = Queue("emails", own_client).jobs()
    assert queued.job_id == module.result_id
    assert [entry.queue for entry in ScheduledSet(own_client)] == ["default"]


def test_without_django_settings_the_error_says_what_to_set() -> None:
    """A worker process where nothing set Django up (no DJANGO_SETTINGS_MODULE): the task's
    error names the variable to set."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", "from jobkit.contrib.django.runner import ensure_django\n"
                               "ensure_django()"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "jobkit.errors.JobkitError: a Django task reached a worker without Django " \
           "settings: start the worker with DJANGO_SETTINGS_MODULE set" in done.stderr


def test_in_an_atomic_block_result_and_job_wait_for_the_commit(tasks: Any,
                                                               own_client: redis.Redis) -> None:
    """jobkit's enqueue_after_transaction_commit (on by default): the result and the job are
    written when the block commits, and neither after a rollback."""
    from django.db import transaction
    from django_tasks import TaskResultStatus, task_backends
    from django_tasks.exceptions import TaskResultDoesNotExist

    from jobkit.contrib.django.store import result_key

    def atomic() -> AbstractContextManager[Any]:  # typed: Django's atomic() also decorates
        return cast(AbstractContextManager[Any], transaction.atomic())

    queue = Queue("default", own_client)
    with atomic():
        kept = tasks.calculate_meaning_of_life.enqueue()
        assert kept.status == TaskResultStatus.READY
        assert not own_client.exists(result_key(kept.id)) and queue.size() == 0
    assert task_backends["default"].get_result(kept.id).status == TaskResultStatus.READY
    assert queue.find(kept.id) is not None

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), atomic():
        dropped = tasks.calculate_meaning_of_life.enqueue()
        raise Rollback
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(dropped.id)
    assert queue.size() == 1


def test_priority_steps_and_naive_run_after_without_use_tz(tasks: Any,
                                                           own_client: redis.Redis) -> None:
    """Django's priority -> jobkit's four steps at each boundary; with USE_TZ off, a naive
    run_after is Django's local time (TIME_ZONE), and comes back naive."""
    from django.test import override_settings

    from jobkit.contrib.django.backend import jobkit_priority

    assert [jobkit_priority(p) for p in (100, 1, 0, -1, -49, -50, -100)] == [0, 0, 3, 6, 6, 9, 9]
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris"):
        result = tasks.calculate_meaning_of_life.using(
            run_after=dt.datetime(2030, 1, 1, 9)).enqueue()
        [entry] = ScheduledSet(own_client)
        assert entry.score == dt.datetime(2030, 1, 1, 8, tzinfo=dt.UTC).timestamp()
        fetched = tasks.calculate_meaning_of_life.get_result(result.id)
        assert fetched.task.run_after == dt.datetime(2030, 1, 1, 9)
        assert fetched.enqueued_at is not None and fetched.enqueued_at.tzinfo is None
