"""`async def perform`: run to its end on every pool (real workers), by `perform_now` (also
where an event loop is already running) and in the test modes; what is refused at definition."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import redis

import jobkit
from jobkit import Job, JobClassError, before_perform, keys, testing
from jobkit.testing_services import RedisServer, WorkerProcess, wait_until
from tests.async_jobs import EVENTS, RUNS, AsyncCallbacksJob, AsyncFailingJob, AsyncRecordJob
from tests.doc_examples import DOCS, example_module, run

ROOT = Path(__file__).resolve().parent.parent



@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_an_async_job_runs_to_its_end_on_every_pool(own_client: redis.Redis, own_redis: RedisServer,
                                                    pool: str) -> None:
    jobkit.perform_all_later([AsyncRecordJob(f"{pool}-{n}", 0.05) for n in range(6)])
    AsyncFailingJob.perform_later(pool)
    worker = WorkerProcess(own_redis.url, "-q", "async_test", "-P", pool, "-c", "2", cwd=ROOT)
    try:
        wait_until(lambda: own_client.llen(RUNS) == 6 and own_client.zcard(keys.DEAD) == 1,
                   timeout=30, what="6 async runs and the failing one in the dead set")
    finally:
        worker.stop()
    assert sorted(r.decode() for r in own_client.lrange(RUNS, 0, -1)) == [
        f"{pool}-{n}:1" for n in range(6)]
    (dead,) = own_client.zrange(keys.DEAD, 0, -1)
    entry = json.loads(dead)
    assert (entry["error_class"], entry["error_message"]) == ("builtins.ValueError",
                                                              f"async failure: {pool}")
    assert "never awaited" not in worker.output()


def test_perform_now_returns_what_the_coroutine_returns(own_client: redis.Redis) -> None:
    assert AsyncRecordJob.perform_now("now") == "now"
    assert AsyncRecordJob("job").perform_now() == "job"
    assert AsyncRecordJob.set(queue="other").perform_now("set") == "set"
    with pytest.raises(ValueError, match="async failure: here"):
        AsyncFailingJob.perform_now("here")


def test_perform_now_inside_a_running_event_loop(own_client: redis.Redis) -> None:
    async def handler() -> str:  # an async web handler or test calling perform_now
        return AsyncRecordJob.perform_now("in-loop")

    assert asyncio.run(handler()) == "in-loop"
    assert own_client.lrange(RUNS, 0, -1) == [b"in-loop:1"]


def test_perform_now_in_a_running_loop_keeps_the_callers_context_variables() -> None:
    import contextvars

    request_id = contextvars.ContextVar("request_id", default="unset")

    class SeesContext(Job):
        async def perform(self) -> str:
            return request_id.get()

    async def handler() -> str:
        request_id.set("request-42")
        return SeesContext.perform_now()

    assert asyncio.run(handler()) == "request-42"


def test_callbacks_run_around_the_whole_awaited_perform() -> None:
    EVENTS.clear()
    assert AsyncCallbacksJob.perform_now() == 7
    assert EVENTS == ["before", "perform started", "perform ended", "after"]


def test_the_test_modes_run_async_jobs(own_client: redis.Redis) -> None:
    with testing.fake():
        AsyncRecordJob.perform_later("fake")
        assert own_client.llen(RUNS) == 0
        assert testing.drain_all() == 1
    with testing.inline():
        AsyncRecordJob.perform_later("inline")
    assert sorted(own_client.lrange(RUNS, 0, -1)) == [b"fake:1", b"inline:1"]


def test_a_perform_that_is_not_a_function_or_coroutine_function_is_refused() -> None:
    with pytest.raises(JobClassError, match="not a generator function"):
        class GeneratorJob(Job):
            def perform(self):  # type: ignore[override]
                yield 1

    with pytest.raises(JobClassError, match="not an async generator function"):
        class AsyncGeneratorJob(Job):
            async def perform(self):  # type: ignore[override]
                yield 1

    with pytest.raises(JobClassError, match="not staticmethod"):
        class StaticJob(Job):
            perform = staticmethod(lambda: None)

    with pytest.raises(JobClassError, match="must be a plain method"):
        class AsyncCallbackJob(Job):
            @before_perform
            async def warm_up(self) -> None:
                pass

            def perform(self) -> None:
                pass


def test_the_example_in_jobs_md_runs(own_client: redis.Redis) -> None:
    text = (DOCS / "jobs.md").read_text()
    (example,) = re.findall(r"#### async def perform\n\n```python\n(.*?)```", text, re.DOTALL)
    with example_module("docs_async_example") as module:
        run(example, module, "docs/jobs.md")
    assert module.total > 0 and own_client.llen("default") == 1
