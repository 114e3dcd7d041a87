"""Mistakes a type checker must catch in a user's module: tests/test_typing.py runs pyright on
this file and expects an error on exactly the lines with an "error:" comment. Never imported."""

from __future__ import annotations

from jobkit import perform_all_later, testing
from tests.typing.sample_jobs import ImportJob

ImportJob.perform_later("1")  # error: account_id is an int
ImportJob.perform_later(1, dry_rn=True)  # error: no such argument
ImportJob.perform_later()  # error: account_id missing
ImportJob.perform_in(30, 1, 2)  # error: too many positional arguments
ImportJob.set(queu="low")  # error: no such option
ImportJob.set(wait="5 minutes")  # error: wait is seconds or a timedelta
ImportJob.set(priority=1).perform_later(accountid=1)  # error: no such argument
ImportJob.perform_now(1).upper()  # error: perform returns an int
print(ImportJob.jobs[0].job_klass)  # error: no such attribute
testing.assert_enqueued_with(job=ImportJob, args=1)  # error: args is a sequence
testing.assert_enqueued_jobs("2")  # error: a count
ImportJob("1")  # error: a job is built with perform's arguments
perform_all_later([ImportJob(1, 2)])  # error: too many positional arguments
