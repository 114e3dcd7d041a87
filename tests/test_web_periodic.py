"""The Periodic page through a WSGI test client: the listing (next and last run, last job id,
state), Pause / Resume / Run now with CSRF, unknown names and actions, escaping, auth."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

import jobkit
from jobkit import api, keys, periodic
from tests.test_web import Client

REPORT = {"cron": "0 0 1 1 *", "class": "tests.periodic_jobs.ReportJob", "args": ["yearly"],
          "description": "the yearly report"}
LAST_TICK = datetime(2025, 1, 1, tzinfo=UTC).timestamp()


@pytest.fixture
def client(r: redis.Redis) -> Client:
    return Client()


@pytest.fixture
def schedule(r: redis.Redis) -> Iterator[None]:
    """Two entries in the settings, a yearly one (never due while a test runs) and a disabled
    one; the settings are put back afterwards."""
    jobkit.configure(schedule={
        "report": REPORT,
        "off": {"every": "5m", "class": "tests.periodic_jobs.ReportJob", "queue": "reports",
                "kwargs": {"kind": "weekly"}, "enabled": False}})
    try:
        yield
    finally:
        jobkit.configure()


def when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def row(html: str, name: str) -> str:
    """The table row of entry `name`."""
    start = html.index(f"<td>{name}</td>")
    return html[start:html.index("</tr>", start)]


def test_the_page_lists_entries_with_next_and_last_run(client: Client, r: redis.Redis,
                                                       schedule: None) -> None:
    r.hset(keys.PERIODIC_LAST, mapping={"report:tick": repr(LAST_TICK),
                                        "report:job_id": "job-of-2025",
                                        "report:at": repr(LAST_TICK + 0.25)})
    status, headers, html = client.get("/periodic")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<a href="/periodic">Periodic</a>' in html and "Periodic <small>(2)</small>" in html
    report = row(html, "report")
    states = {state.entry.name: state for state in periodic.states()}
    for text in ("cron 0 0 1 1 *", "tests.periodic_jobs.ReportJob", "args=[&#39;yearly&#39;]",
                 "<td>periodic_test</td>", "<td>active</td>",
                 f"<td class=\"nowrap\">{when(states['report'].next_tick.timestamp())}</td>",
                 "<td class=\"nowrap\">2025-01-01 00:00:00 UTC</td>", "job-of-2025",
                 "enqueued 2025-01-01 00:00:00 UTC", "the yearly report",
                 'value="pause">Pause</button>', 'value="run">Run now</button>'):
        assert text in report, text
    off = row(html, "off")
    for text in ("every 5m", "kwargs={&#39;kind&#39;: &#39;weekly&#39;}", "<td>reports</td>",
                 "<td>disabled</td>"):
        assert text in off, text
    # never ran: no last run, no last job
    assert '<td class="nowrap">-</td>' in off and "<td>-</td>" in off
    assert "skipped" not in html


def test_a_tick_skipped_as_too_late_says_so(client: Client, r: redis.Redis,
                                            schedule: None) -> None:
    # What the scheduler records of a tick more than 60 s late: the tick alone, no job.
    r.hset(keys.PERIODIC_LAST, "report:tick", repr(LAST_TICK))
    report = row(client.get("/periodic")[2], "report")
    assert ("<td class=\"nowrap\">2025-01-01 00:00:00 UTC<br><small>skipped (late or paused)"
            "</small></td>") in report and "<td>-</td>" in report
    # an earlier tick's job stays the last job
    r.hset(keys.PERIODIC_LAST, mapping={"report:job_id": "job-of-2024",
                                        "report:at": repr(LAST_TICK - 366 * 86400)})
    report = row(client.get("/periodic")[2], "report")
    assert "skipped (late or paused)" in report and "job-of-2024" in report
    assert "enqueued 2024-01-01 00:00:00 UTC" in report


def test_a_tick_taken_by_the_scheduler_shows_as_last_run_and_job(client: Client,
                                                                  r: redis.Redis) -> None:
    jobkit.configure(schedule={"tick": {"every": "1s", "class": "tests.periodic_jobs.TickJob",
                                        "date_as_argument": True}})
    try:
        assert periodic.PeriodicScheduler().look() == 1
        html = client.get("/periodic")[2]
    finally:
        jobkit.configure()
    job_id = r.hget(keys.PERIODIC_LAST, "tick:job_id")
    tick = float(r.hget(keys.PERIODIC_LAST, "tick:tick"))
    assert job_id and api.Queue("periodic_test").jobs(0, 1)[0].job_id == job_id
    tick_row = row(html, "tick")
    assert job_id in tick_row and f"<td class=\"nowrap\">{when(tick)}</td>" in tick_row
    assert "args=[] + the tick" in tick_row and "skipped" not in tick_row


def test_pause_then_resume(client: Client, r: redis.Redis, schedule: None) -> None:
    status, headers, _ = client.post("/periodic", {"name": "report", "action": "pause"})
    assert status == 303 and headers["Location"] == "/periodic"
    assert r.sismember(keys.PERIODIC_PAUSED, "report")
    report = row(client.get("/periodic")[2], "report")
    assert '<span class="paused">paused</span>' in report
    assert 'value="resume">Resume</button>' in report and "Pause" not in report
    status, headers, _ = client.post("/periodic", {"name": "report", "action": "resume"})
    assert status == 303 and headers["Location"] == "/periodic"
    assert not r.sismember(keys.PERIODIC_PAUSED, "report")
    report = row(client.get("/periodic")[2], "report")
    assert "<td>active</td>" in report and 'value="pause">Pause</button>' in report
    # resume records the tick that passed while paused as taken, without a job
    assert "skipped (late or paused)" in report


def test_run_now_enqueues_the_job_on_its_queue(client: Client, r: redis.Redis,
                                               schedule: None) -> None:
    client.post("/periodic", {"name": "report", "action": "pause"})
    status, headers, _ = client.post("/periodic", {"name": "report", "action": "run"})
    assert status == 303 and headers["Location"] == "/periodic"
    [job] = api.Queue("periodic_test").jobs(0, 10)
    assert job.job_class == "tests.periodic_jobs.ReportJob" and job.args == ["yearly"]
    assert r.sismember(keys.PERIODIC_PAUSED, "report")  # run now leaves a pause alone
    assert not r.hexists(keys.PERIODIC_LAST, "report:job_id")  # not a tick of the schedule


def test_entries_added_at_runtime_are_listed_and_operated(client: Client,
                                                          r: redis.Redis) -> None:
    from tests.periodic_jobs import ReportJob

    periodic.add("added", job=ReportJob, cron="0 0 1 1 *", args=["runtime"])
    try:
        assert "args=[&#39;runtime&#39;]" in row(client.get("/periodic")[2], "added")
        assert client.post("/periodic", {"name": "added", "action": "run"})[0] == 303
        assert api.Queue("periodic_test").jobs(0, 10)[0].args == ["runtime"]
    finally:
        periodic.remove("added")


def test_actions_need_post_and_csrf(client: Client, r: redis.Redis, schedule: None) -> None:
    status, _, body = client.post("/periodic", {"name": "report", "action": "pause"},
                                  with_csrf=False)
    assert status == 403 and "CSRF" in body
    client.csrf("/periodic")  # the cookie is set, the form's token is forged
    status, _, _ = client.request("POST", "/periodic", {"name": "report", "action": "run",
                                                        "csrf": "forged"})
    assert status == 403
    assert client.get("/periodic?name=report&action=pause")[0] == 200
    assert not r.sismember(keys.PERIODIC_PAUSED, "report")
    assert api.Queue("periodic_test").size() == 0


@pytest.mark.parametrize("action", ["pause", "resume", "run"])
def test_an_unknown_name_is_a_404_and_does_nothing(client: Client, r: redis.Redis,
                                                   schedule: None, action: str) -> None:
    status, _, body = client.post("/periodic", {"name": "nope", "action": action})
    assert status == 404
    assert body.startswith("no periodic entry named 'nope' (it may have been removed)")
    assert r.scard(keys.PERIODIC_PAUSED) == 0 and api.Queue("periodic_test").size() == 0


def test_an_unknown_action_is_a_400(client: Client, schedule: None) -> None:
    status, _, body = client.post("/periodic", {"name": "report", "action": "delete"})
    assert status == 400 and body == "unknown action 'delete'"


def test_a_job_the_web_process_cannot_build_is_a_409(client: Client, r: redis.Redis) -> None:
    jobkit.configure(schedule={
        "gone": {"every": "1h", "class": "tests.nowhere.GoneJob"},
        "misfit": {"every": "1h", "class": "tests.periodic_jobs.TickJob", "args": [1, 2]}})
    try:
        status, _, html = client.get("/periodic")
        assert status == 200 and "(the class&#39;s queue_as)" in row(html, "gone")
        gone = client.post("/periodic", {"name": "gone", "action": "run"})
        misfit = client.post("/periodic", {"name": "misfit", "action": "run"})
    finally:
        jobkit.configure()
    assert gone[0] == 409
    assert gone[2] == ("gone: run now failed: JobClassError: tests.nowhere.GoneJob: module "
                       "tests has no nowhere.GoneJob")
    assert misfit[0] == 409
    assert misfit[2].startswith("misfit: run now failed: TypeError: TickJob.perform(): ")
    assert api.Queue("periodic_test").size() == 0


def test_the_page_escapes_everything(client: Client, r: redis.Redis) -> None:
    jobkit.configure(schedule={"<i>x</i>": {
        **REPORT, "args": ["<script>alert(1)</script>"], "description": "<b>bold</b>"}})
    try:
        html = client.get("/periodic")[2]
        status = client.post("/periodic", {"name": "<i>x</i>", "action": "pause"})[0]
    finally:
        jobkit.configure()
    assert "<script>alert(1)" not in html and "<b>bold" not in html and "<i>x" not in html
    assert "&lt;script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert 'name="name" value="&lt;i&gt;x&lt;/i&gt;"' in html
    assert status == 303 and r.sismember(keys.PERIODIC_PAUSED, "<i>x</i>")


def test_no_entries(client: Client, r: redis.Redis) -> None:
    status, _, html = client.get("/periodic")
    assert status == 200 and "No periodic jobs" in html


def test_outside_development_the_page_needs_authentication(r: redis.Redis,
                                                           monkeypatch) -> None:
    jobkit.configure(environment="production", schedule={"report": REPORT})
    try:
        assert Client().get("/periodic")[0] == 403
        assert Client().request("POST", "/periodic", {"name": "report", "action": "pause"}
                                )[0] == 403
        monkeypatch.setenv("JOBKIT_WEB_USERNAME", "admin")
        monkeypatch.setenv("JOBKIT_WEB_PASSWORD", "s3cret")
        assert Client().get("/periodic")[0] == 401
        good = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
        status, _, html = Client().get("/periodic", headers=good)
        assert status == 200 and "report" in html
    finally:
        jobkit.configure()
    assert not r.sismember(keys.PERIODIC_PAUSED, "report")
