"""jobkit.testing and the pytest plugin, used as a user would, on the TaskLoggerJob example.

Each assertion is shown passing and failing with a message that names what was expected and
what was recorded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

import jobkit
from jobkit import testing
from jobkit.mailer import MailDeliveryJob
from mailers.user_mailer import UserMailer
from tests.doc_examples import DOCS, example_module, python_blocks, run
from tests.example_app import FanOutJob, Log, SignupJob, TaskLoggerJob, logged
from tests.models import SqliteSession, User


@pytest.fixture(autouse=True)
def empty_logs(sqlite_tables) -> Iterator[None]:
    session = SqliteSession()
    session.query(Log).delete()
    session.commit()
    SqliteSession.remove()
    yield


@pytest.fixture
def user(make_user) -> User:
    return make_user(email="grace@example.com", name="Grace")


def test_fake_mode_records_and_drains(jobkit_fake) -> None:
    TaskLoggerJob.perform_later(1)
    FanOutJob.perform_later([2, 3])
    assert [j.args for j in TaskLoggerJob.jobs] == [[1]]
    assert len(testing.jobs(queue="default")) == 2
    assert logged() == []
    assert FanOutJob.drain() == 1
    assert [j.args for j in TaskLoggerJob.jobs] == [[1], [2], [3]]
    assert TaskLoggerJob.drain() == 3
    assert logged() == [1, 2, 3]
    assert TaskLoggerJob.jobs == []


def test_drain_all_runs_jobs_enqueued_by_jobs(jobkit_fake) -> None:
    FanOutJob.perform_later([4, 5])
    assert testing.drain_all() == 3
    assert logged() == [4, 5]


def test_clear_forgets_jobs(jobkit_fake) -> None:
    TaskLoggerJob.perform_later(1)
    TaskLoggerJob.clear()
    testing.assert_no_enqueued_jobs()


def test_inline_mode_performs_after_a_round_trip(jobkit_inline) -> None:
    TaskLoggerJob.perform_later(7, message="hi")
    assert logged() == [7]
    with pytest.raises(jobkit.SerializationError, match=r"args\[0\]: object of type object"):
        TaskLoggerJob.perform_later(object())


def test_modes_as_context_managers_and_decorators() -> None:
    with testing.fake():
        TaskLoggerJob.perform_later(1)
        testing.assert_enqueued_jobs(1)

    @testing.inline()
    def run() -> None:
        TaskLoggerJob.perform_later(2)

    run()
    assert logged() == [2]


def test_disable_mode_uses_the_real_broker(jobkit_worker) -> None:
    with testing.disable():
        TaskLoggerJob.perform_later(11)
    jobkit_worker.wait_for(lambda: logged() == [11], what="the real worker to log 11")


def test_jobkit_worker_runs_scheduled_jobs_when_time_is_advanced(jobkit_worker,
                                                                  jobkit_advance) -> None:
    TaskLoggerJob.set(wait=dt.timedelta(hours=2)).perform_later(12)
    assert jobkit_advance(60) == 0  # not due within a minute
    assert jobkit_advance(3 * 3600) == 1
    jobkit_worker.wait_for(lambda: logged() == [12], what="the advanced job to run")
    jobkit_worker.idle()


def test_advance_in_fake_mode_performs_only_what_falls_due(jobkit_fake) -> None:
    TaskLoggerJob.set(wait=30).perform_later(1)
    TaskLoggerJob.set(wait=3600).perform_later(2)
    assert testing.advance(60) == 1
    assert logged() == [1]
    assert [j.args for j in TaskLoggerJob.jobs] == [[2]]


def test_assert_enqueued_jobs_passes_and_fails(jobkit_fake) -> None:
    TaskLoggerJob.perform_later(1)
    TaskLoggerJob.set(queue="mailers").perform_later(2)
    testing.assert_enqueued_jobs(2)
    testing.assert_enqueued_jobs(1, job=TaskLoggerJob, queue="mailers")
    with pytest.raises(AssertionError) as failure:
        testing.assert_enqueued_jobs(3, job=TaskLoggerJob)
    assert "expected 3 enqueued job(s) (TaskLoggerJob), got 2" in str(failure.value)
    assert "tests.example_app.TaskLoggerJob(1) queue='default'" in str(failure.value)


def test_block_forms_count_only_the_block(jobkit_fake) -> None:
    TaskLoggerJob.perform_later(1)
    with testing.assert_enqueued_jobs(2):
        TaskLoggerJob.perform_later(2)
        TaskLoggerJob.perform_later(3)
    with pytest.raises(AssertionError, match="expected 1 enqueued job"), \
            testing.assert_enqueued_jobs(1):
        pass
    with testing.assert_no_enqueued_jobs():
        pass
    with testing.perform_enqueued_jobs():
        TaskLoggerJob.perform_later(4)
    assert logged() == [4]


def test_assert_no_enqueued_jobs_fails_with_the_listing(jobkit_fake) -> None:
    testing.assert_no_enqueued_jobs()
    TaskLoggerJob.perform_later(5)
    with pytest.raises(AssertionError, match=r"expected 0 enqueued job\(s\), got 1"):
        testing.assert_no_enqueued_jobs()


def test_assert_enqueued_with_every_field(jobkit_fake) -> None:
    noon = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
    TaskLoggerJob.set(wait_until=noon, priority=3, queue="storage_purge").perform_later(
        9, message="later")
    found = testing.assert_enqueued_with(job=TaskLoggerJob, args=[9],
                                         kwargs={"message": "later"}, queue="storage_purge",
                                         at=noon, priority=3)
    assert found.job_class == "tests.example_app.TaskLoggerJob"
    for wrong in ({"args": [8]}, {"queue": "default"}, {"priority": 1},
                  {"at": noon + dt.timedelta(minutes=5)}, {"job": FanOutJob}):
        with pytest.raises(AssertionError, match="no enqueued job matches"):
            testing.assert_enqueued_with(**wrong)


def test_perform_enqueued_jobs_and_performed_assertions(jobkit_fake) -> None:
    TaskLoggerJob.perform_later(1)
    FanOutJob.perform_later([2])
    testing.assert_performed_jobs(0)
    testing.perform_enqueued_jobs()
    testing.assert_performed_jobs(3)  # the two, and the one FanOutJob enqueued
    assert testing.jobs() == []
    testing.assert_performed_jobs(2, job=TaskLoggerJob)
    testing.assert_performed_with(job=TaskLoggerJob, args=[2])
    with pytest.raises(AssertionError, match="no performed job matches"):
        testing.assert_performed_with(job=TaskLoggerJob, args=[99])
    with pytest.raises(AssertionError, match=r"expected 5 performed job\(s\), got 3"):
        testing.assert_performed_jobs(5)


def test_perform_enqueued_jobs_fixture(perform_enqueued_jobs) -> None:
    FanOutJob.perform_later([6, 7])
    assert logged() == [6, 7]


def test_email_assertions(jobkit_outbox, user: User) -> None:
    testing.assert_no_emails()
    SignupJob.perform_later(user)
    testing.assert_enqueued_jobs(1, job=SignupJob)
    SignupJob.drain()
    testing.assert_enqueued_email_with(UserMailer.welcome, args=[user])
    with pytest.raises(AssertionError, match="no UserMailer.password_reset mail enqueued"):
        testing.assert_enqueued_email_with(UserMailer.password_reset, args=[user])
    testing.assert_no_emails()  # enqueued, not delivered yet
    MailDeliveryJob.drain()
    testing.assert_emails(1)
    assert jobkit_outbox[0]["To"] == "grace@example.com"
    with pytest.raises(AssertionError, match=r"expected 2 email\(s\), got 1"):
        testing.assert_emails(2)
    with pytest.raises(AssertionError, match=r"expected 0 email\(s\), got 1"):
        testing.assert_no_emails()


def test_assert_emails_block_delivers_mail_enqueued_in_it(jobkit_fake, user: User) -> None:
    with testing.assert_emails(2):
        UserMailer.welcome(user).deliver_later()
        UserMailer.password_reset(user).deliver_now()
    with pytest.raises(AssertionError, match=r"expected 1 email\(s\), got 0"), \
            testing.assert_emails(1):
        pass


def test_helpers_need_a_mode() -> None:
    for helper in (lambda: testing.assert_enqueued_jobs(0), lambda: TaskLoggerJob.jobs,
                   TaskLoggerJob.drain, testing.drain_all):
        with pytest.raises(RuntimeError, match="jobs are not recorded with the 'celery' "
                           "adapter: use `with jobkit.testing.fake"):
            helper()


def test_block_forms_for_mail_and_performed_jobs_count_only_the_block(jobkit_fake,
                                                                       user: User) -> None:
    UserMailer.welcome(user).deliver_later()  # before the block: not delivered by it
    with testing.assert_emails(0):
        pass
    with testing.assert_performed_jobs(2):
        TaskLoggerJob.perform_later(1)
        TaskLoggerJob.perform_later(2)
    assert logged() == [1, 2]
    MailDeliveryJob.drain()
    testing.assert_enqueued_email_with(UserMailer.welcome, args=[user])  # performed: found


def test_advance_adds_up(jobkit_fake) -> None:
    TaskLoggerJob.set(wait=90).perform_later(1)
    assert testing.advance(60) == 0
    assert testing.advance(60) == 1


@pytest.mark.parametrize("install", [
    lambda: jobkit.use_adapter("test"),
    lambda: jobkit.configure(adapter="test"),
])
def test_the_test_adapter_setting_records_what_fake_mode_does(install, r) -> None:
    install()
    try:
        TaskLoggerJob.perform_later(5)
        [record] = TaskLoggerJob.jobs
        assert record.args == [5]
        testing.assert_enqueued_with(job=TaskLoggerJob, args=[5])
        assert TaskLoggerJob.drain() == 1
        assert logged() == [5]
        testing.assert_performed_jobs(1)
    finally:
        jobkit.use_adapter(None)
        jobkit.configure()


def test_an_unconsumed_queue_is_warned_about_once_per_queue(r, caplog) -> None:
    nobody, no_one = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("nobody", "no_one"))
    jobkit.configure(environment="development", queues=["default"])
    jobkit.perform_all_later([TaskLoggerJob(n).set(queue=nobody) for n in range(300)])
    TaskLoggerJob.set(queue=nobody).perform_later(1)
    TaskLoggerJob.set(queue=no_one).perform_later(2)
    warnings = [m for m in caplog.messages if "which no configured worker consumes" in m]
    assert [w.split("'")[1] for w in warnings] == [nobody, no_one]
    assert r.llen(nobody) == 301


def test_assert_no_enqueued_jobs_block_counts_what_the_block_enqueued(jobkit_fake) -> None:
    TaskLoggerJob.perform_later(1)
    with testing.assert_no_enqueued_jobs():
        testing.drain_all()  # performing what was there is not enqueueing
    with pytest.raises(AssertionError, match=r"expected 0 enqueued job\(s\), got 1"), \
            testing.assert_no_enqueued_jobs():
        TaskLoggerJob.perform_later(2)
        testing.drain_all()


def test_delays_count_from_the_advanced_clock_and_run_soonest_first(jobkit_fake) -> None:
    testing.advance(3600)
    TaskLoggerJob.set(wait=600).perform_later(1)
    TaskLoggerJob.set(wait=60).perform_later(2)
    assert testing.advance(1) == 0  # 600 s and 60 s from now on the test clock
    assert testing.advance(600) == 2
    assert [r.args for r in testing.performed()] == [[2], [1]]  # soonest first


# -- Rails' filters: only=, except_=, queue=, at= -------------------------------------------------

def test_perform_enqueued_jobs_picks_with_only_except_queue_and_at(jobkit_fake) -> None:
    noon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    TaskLoggerJob.perform_later(1)
    TaskLoggerJob.set(queue="low").perform_later(2)
    TaskLoggerJob.set(wait_until=noon).perform_later(3)
    FanOutJob.perform_later([4])
    testing.perform_enqueued_jobs(only=FanOutJob)  # and not the TaskLoggerJob it enqueues
    assert logged() == []
    testing.perform_enqueued_jobs(queue="low")
    assert logged() == [2]
    testing.perform_enqueued_jobs(at=noon - dt.timedelta(minutes=1))  # 1 and 4, not 3
    assert logged() == [1, 2, 4]
    testing.perform_enqueued_jobs(except_=[TaskLoggerJob])
    assert [j.args for j in testing.jobs()] == [[3]]
    testing.perform_enqueued_jobs(only=lambda job: job.args == [3], at=noon)
    assert logged() == [1, 2, 3, 4]
    testing.assert_performed_jobs(4, only="tests.example_app.TaskLoggerJob")
    testing.assert_no_enqueued_jobs()


def test_perform_enqueued_jobs_block_performs_only_what_it_picks(jobkit_inline) -> None:
    with testing.perform_enqueued_jobs(only=[FanOutJob]):  # the rest is recorded, inline or not
        FanOutJob.perform_later([1, 2])
        TaskLoggerJob.set(queue="low").perform_later(3)
    assert logged() == []
    assert [j.args for j in TaskLoggerJob.jobs] == [[1], [2], [3]]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with testing.perform_enqueued_jobs(except_=FanOutJob, at=later - dt.timedelta(hours=1)):
        TaskLoggerJob.perform_later(5)
        TaskLoggerJob.set(wait_until=later).perform_later(6)  # after at=: recorded
        FanOutJob.perform_later([7])
    assert logged() == [5]
    assert [j.args for j in testing.jobs()] == [[1], [2], [3], [6], [[7]]]
    TaskLoggerJob.perform_later(8)  # inline mode again after the block
    assert logged() == [5, 8]


def test_count_assertions_take_lists_predicates_and_except(jobkit_fake) -> None:
    noon = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
    TaskLoggerJob.perform_later(1)
    TaskLoggerJob.set(wait_until=noon, queue="low", priority=3).perform_later(2, message="x")
    FanOutJob.perform_later([3])
    testing.assert_enqueued_jobs(3, only=[TaskLoggerJob, FanOutJob])
    testing.assert_enqueued_jobs(1, except_=TaskLoggerJob)
    testing.assert_enqueued_jobs(1, only=lambda job: job.kwargs.get("message") == "x")
    testing.assert_enqueued_jobs(0, only=TaskLoggerJob, queue="nowhere")
    with testing.assert_enqueued_jobs(1, only=FanOutJob):
        FanOutJob.perform_later([4])
        TaskLoggerJob.perform_later(5)
    testing.assert_enqueued_jobs(1, only=TaskLoggerJob, queue="low")
    with pytest.raises(AssertionError) as failure:
        testing.assert_enqueued_jobs(5, except_=FanOutJob)
    message = str(failure.value)
    assert message.startswith("expected 5 enqueued job(s) (except FanOutJob), got 3\nenqueued:")
    assert ("tests.example_app.TaskLoggerJob(2, message='x') queue='low' "
            "at=2030-01-01T12:00:00Z priority=3") in message
    assert "tests.example_app.FanOutJob([3]) queue='default'" in message
    with pytest.raises(AssertionError, match=r"(?s)expected 2 enqueued job\(s\) \(only "
                       r"TaskLoggerJob\), got 1\nenqueued in the block:\n  "
                       r"tests.example_app.TaskLoggerJob\(6\) queue='default'\n  "
                       r"tests.example_app.FanOutJob\(\[7\]\)"), \
            testing.assert_enqueued_jobs(2, only=TaskLoggerJob):
        TaskLoggerJob.perform_later(6)
        FanOutJob.perform_later([7])


def test_assert_no_performed_jobs_both_forms(jobkit_fake) -> None:
    TaskLoggerJob.perform_later(1)
    testing.assert_no_performed_jobs()
    with testing.assert_no_performed_jobs(only=FanOutJob):  # only FanOutJobs are performed
        TaskLoggerJob.perform_later(2)
    assert logged() == [] and len(TaskLoggerJob.jobs) == 2
    testing.perform_enqueued_jobs()
    with pytest.raises(AssertionError, match=r"(?s)expected 0 performed job\(s\), got 2\n"
                       r"performed:\n  tests.example_app.TaskLoggerJob\(1\) queue='default' "
                       r"\(performed\)"):
        testing.assert_no_performed_jobs()
    testing.assert_no_performed_jobs(except_=TaskLoggerJob)
    with pytest.raises(AssertionError, match=r"expected 0 performed job\(s\) \(only "
                       r"FanOutJob\), got 1"), testing.assert_no_performed_jobs(only=FanOutJob):
        FanOutJob.perform_later([3])
    with testing.assert_performed_jobs(1, only=TaskLoggerJob):
        TaskLoggerJob.perform_later(4)
        FanOutJob.perform_later([5])  # not picked: recorded, not performed
    assert [j.args for j in FanOutJob.jobs] == [[[5]]]


def test_assert_enqueued_with_block_form(jobkit_fake) -> None:
    TaskLoggerJob.perform_later(1)
    with testing.assert_enqueued_with(job=TaskLoggerJob, args=[2], queue="low") as job:
        TaskLoggerJob.set(queue="low").perform_later(2)
        with pytest.raises(RuntimeError, match="is filled in when the block ends"):
            job.args  # noqa: B018
    assert job.args == [2] and job == TaskLoggerJob.jobs[1]
    with pytest.raises(AssertionError) as failure, \
            testing.assert_enqueued_with(job=TaskLoggerJob, args=[1]):  # before the block
        TaskLoggerJob.set(priority=5).perform_later(3)
    assert str(failure.value).startswith("no job enqueued in the block matches")
    assert "tests.example_app.TaskLoggerJob(3) queue='default' priority=5" in str(failure.value)
    assert "TaskLoggerJob(1)" not in str(failure.value)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    with testing.assert_enqueued_with(args=lambda args: args[0] > 3,
                                      at=lambda at: at is not None and at <= soon):
        TaskLoggerJob.set(wait=60).perform_later(4)
    with testing.assert_performed_with(job=TaskLoggerJob, args=[5]) as performed:
        FanOutJob.perform_later([5])
    assert performed.queue == "default" and logged() == [5]
    found = testing.assert_enqueued_with(job=TaskLoggerJob, args=[2])
    assert isinstance(found, testing.EnqueuedJob) and found == TaskLoggerJob.jobs[1]


def expect_enqueued(n: int) -> contextlib.AbstractContextManager[None]:
    """A user's helper returning the assertion: ``with expect_enqueued(1):`` is a block."""
    return testing.assert_enqueued_jobs(n, only=TaskLoggerJob)


def test_block_forms_entered_indirectly_still_check_the_block(jobkit_fake) -> None:
    TaskLoggerJob.perform_later(1)
    testing.perform_enqueued_jobs()  # performed so far: no job is waiting now
    with pytest.raises(AssertionError, match=r"(?s)got 1\nwaiting in the block:\n.*\(2\)"), \
            contextlib.ExitStack() as stack:
        stack.enter_context(testing.assert_no_enqueued_jobs())  # checked now, and the block
        TaskLoggerJob.perform_later(2)
    with contextlib.ExitStack() as stack:  # the block counts only its own jobs, not job 2
        stack.enter_context(testing.assert_enqueued_jobs(2))
        stack.enter_context(testing.assert_performed_jobs(1))
        stack.enter_context(testing.perform_enqueued_jobs(only=FanOutJob))
        FanOutJob.perform_later([])
        TaskLoggerJob.perform_later(3)
    assert [j.args for j in testing.jobs()] == [[2], [3]]
    with pytest.raises(AssertionError, match="no job enqueued in the block matches"), \
            contextlib.ExitStack() as stack:
        stack.enter_context(testing.assert_enqueued_with(job=TaskLoggerJob))  # job 1: found
        FanOutJob.perform_later([])
    with contextlib.ExitStack() as stack:
        found = stack.enter_context(testing.assert_enqueued_with(job=TaskLoggerJob))
        TaskLoggerJob.perform_later(4)
    assert found.args == [4] and testing.performed()[0].args == [1]  # the block's; 1 kept
    with expect_enqueued(1):  # through a function that returns it: the block form
        TaskLoggerJob.perform_later(5)
    with pytest.raises(AssertionError, match=r"expected 1 enqueued .*, got 0"), \
            expect_enqueued(1):
        pass


class DebouncedJob(jobkit.Job):
    debounce = jobkit.Debounce(within=30)

    def perform(self, n: int) -> None:
        pass


def test_jobs_a_perform_block_does_not_pick_are_debounced(jobkit_fake) -> None:
    with testing.perform_enqueued_jobs(only=TaskLoggerJob):
        DebouncedJob.perform_later(1)
        last = DebouncedJob.perform_later(1)  # replaces the first, as outside the block
        TaskLoggerJob.perform_later(3)
    assert [j.job_id for j in DebouncedJob.jobs] == [last.job_id]
    assert DebouncedJob.jobs[0].at is not None and logged() == [3]
    assert [(s.reason, s.by) for s in testing.skipped()] == [("debounced", last.job_id)]


def test_filters_refuse_bad_input_naming_it(jobkit_fake) -> None:
    with pytest.raises(ValueError, match="give only= or except_=, not both"):
        testing.perform_enqueued_jobs(only=TaskLoggerJob, except_=FanOutJob)
    with pytest.raises(ValueError, match=r"give job= or only=/except_=, not both"):
        testing.assert_enqueued_jobs(0, job=TaskLoggerJob, only=FanOutJob)
    with pytest.raises(TypeError, match=r"only= takes a Job class .*; got 42"):
        testing.assert_enqueued_jobs(0, only=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"except_= takes a Job class .*; got <class 'dict'>"):
        testing.perform_enqueued_jobs(except_=[TaskLoggerJob, dict])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"only=: 'tests.example_app.NoSuchJob' is not a Job "
                       r"class's import path"):
        testing.assert_performed_jobs(0, only="tests.example_app.NoSuchJob")


def test_docs_examples_of_the_filters_and_the_block_form_run() -> None:
    text = (DOCS / "testing.md").read_text()
    section = text[text.index("### Picking jobs: only"):text.index("## Mail\n")]
    blocks = python_blocks(section)
    assert len(blocks) == 2
    with example_module("testing_docs_filters") as module:
        for block in blocks:
            run(block, module, "docs/testing.md")
        assert module.done == ["daily", "cleanup", "now", "monthly"]
