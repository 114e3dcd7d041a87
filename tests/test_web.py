"""The web app through a WSGI test client: pages, actions with CSRF, status.json, auth."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest
import redis

import jobkit
from jobkit import api
from jobkit.job_sets import DeadSet
from jobkit.web import create_app
from tests.conftest import wait_for
from tests.jobs import FailingJob, TaskLoggerJob
from tests.test_worker_integration import dead_entries, results


class Client:
    """A WSGI test client with a cookie jar (enough for CSRF)."""

    def __init__(self, app=None) -> None:
        self.app = app or create_app()
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | list | None = None,
                headers: dict | None = None) -> tuple[int, dict, str]:
        path, _, query = path.partition("?")
        body = urlencode(form or {}, doseq=True).encode()
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                   "CONTENT_TYPE": "application/x-www-form-urlencoded",
                   "HTTP_COOKIE": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        environ.update(headers or {})
        setup_testing_defaults(environ)
        captured = {}

        def start_response(status, response_headers):
            captured["status"], captured["headers"] = status, response_headers

        text = b"".join(self.app(environ, start_response)).decode()
        response_headers = dict(captured["headers"])
        for name, value in captured["headers"]:
            if name == "Set-Cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";")[0]
        return int(captured["status"].split()[0]), response_headers, text

    def get(self, path: str, **kwargs) -> tuple[int, dict, str]:
        return self.request("GET", path, **kwargs)

    def csrf(self, path: str = "/queues") -> str:
        _, _, html = self.get(path)
        return re.search(r'name="csrf" value="([^"]+)"', html).group(1)

    def post(self, path: str, form: dict, with_csrf: bool = True) -> tuple[int, dict, str]:
        if with_csrf:
            form = {**form, "csrf": self.csrf()}
        return self.request("POST", path, form)


@pytest.fixture
def client(r: redis.Redis) -> Client:
    return Client()


pytestmark = pytest.mark.usefixtures("worker")


def test_every_page_renders(client: Client, r: redis.Redis) -> None:
    TaskLoggerJob.perform_later(1)
    results(r, 1)
    for path in ("/", "/queues", "/queues/default", "/busy", "/scheduled", "/retries", "/dead",
                 "/mail/previews", "/mail/previews/UserMailer.welcome", "/mail/inbox"):
        status, headers, html = client.get(path)
        assert status == 200, (path, html[:300])
        assert headers["Content-Type"].startswith("text/html")
    assert "Processed" in client.get("/")[2]


def test_dead_job_detail_escapes_arguments_and_retry_removes_it(client: Client,
                                                               r: redis.Redis) -> None:
    job = FailingJob.perform_later("<script>alert(1)</script>" + "y" * 1000)
    [dead] = dead_entries(r, 1)
    status, _, html = client.get("/dead")
    assert job.job_id in html and "<script>alert(1)" not in html
    assert "&lt;script&gt;" in html
    status, _, detail = client.get(f"/dead/{dead.key}")
    assert status == 200 and "failing on purpose" in detail
    assert "raise RuntimeError" in detail and "<script>alert(1)" not in detail
    assert "y… (625 more characters)" in detail  # a long argument is cut on the page
    status, headers, _ = client.post("/dead", {"action": "push", "key": dead.key})
    assert status == 303 and headers["Location"] == "/dead"
    wait_for(lambda: DeadSet().size() == 1 and DeadSet().page()[0].key != dead.key,
             what="the retried job to run (and fail) again")


def test_state_changes_need_post_and_csrf(client: Client, r: redis.Redis) -> None:
    status, _, _ = client.post("/queues/default", {"action": "pause"}, with_csrf=False)
    assert status == 403
    assert not api.Queue("default").paused()
    status, _, _ = client.request("POST", "/queues/default", {"action": "pause",
                                                              "csrf": "forged"})
    assert status == 403
    assert client.get("/queues/default?action=pause")[0] == 200
    assert not api.Queue("default").paused()


def test_pause_and_resume_a_queue_on_a_real_worker(client: Client, r: redis.Redis) -> None:
    assert client.post("/queues/default", {"action": "pause"})[0] == 303
    assert api.Queue("default").paused()
    time.sleep(1.5)  # workers re-read the paused set at most once a second
    TaskLoggerJob.perform_later(5)
    time.sleep(1.5)
    assert r.llen("test:results") == 0 and api.Queue("default").size() == 1
    assert "paused" in client.get("/queues")[2]
    client.post("/queues/default", {"action": "resume"})
    assert results(r, 1)[0]["task_id"] == 5


def test_bulk_actions_search_and_clear(client: Client, r: redis.Redis) -> None:
    for reason in ("alpha", "beta", "gamma"):
        FailingJob.perform_later(reason)
    entries = dead_entries(r, 3)
    _, _, found = client.get("/dead?q=beta")
    assert "beta" in found and "alpha" not in found
    keys = [e.key for e in entries if "alpha" not in e.error_message]
    client.post("/dead", {"action": "delete", "key": keys})
    assert [e.error_message for e in DeadSet()] == ["failing on purpose: alpha"]
    client.post("/dead", {"action": "delete_all"})
    assert DeadSet().size() == 0


def test_scheduled_run_now_and_retry_kill(client: Client, r: redis.Redis) -> None:
    TaskLoggerJob.set(wait=3600).perform_later(77)
    [entry] = api.ScheduledSet().page()
    client.post("/scheduled", {"action": "push", "key": entry.key})
    assert results(r, 1)[0]["task_id"] == 77
    api.RetrySet().add(time.time() + 3600, "default", "{}", job_id="r1", job_class="X",
                       error_class="E", error_message="m")
    [retry] = api.RetrySet().page()
    client.post("/retries", {"action": "kill", "key": retry.key})
    assert api.RetrySet().size() == 0 and DeadSet().find("r1") is not None


def test_large_set_is_paged_in_redis(client: Client, r: redis.Redis) -> None:
    start = time.time() - 100_000  # recent: a bury lets go of entries older than dead_timeout
    with r.pipeline(transaction=False) as pipe:
        for i in range(100_000):
            pipe.zadd("jobkit:dead", {json.dumps({"list_key": "default", "message": "{}",
                                                  "job_id": f"j{i}", "job_class": "Big"}):
                                      start + i})
        pipe.execute()
    status, _, html = client.get("/dead?start=50000")
    assert status == 200 and "(100000)" in html
    assert html.count('name="key"') == 25
    assert "j49999" in html and "50001–50025 of 100000" in html


def test_status_json_ok_then_stuck(client: Client, r: redis.Redis) -> None:
    wait_for(api.processes, what="the worker's heartbeat")
    status, headers, body = client.get("/status.json")
    data = json.loads(body)
    assert status == 200 and data["status"] == "ok" and data["notice"]["notices"] == []
    assert headers["Content-Type"] == "application/json"
    assert data["active_job"]["queue_adapter"] == "celery"
    assert data["job"]["polling_queues"] == ["default", "mailers", "storage_analysis",
                                             "storage_purge"]
    assert data["job"]["workers"] and data["item"]["current_count"] >= 1
    TaskLoggerJob.set(queue="orphans").perform_later(1)
    status, _, body = client.get("/status.json")
    data = json.loads(body)
    assert status == 503 and data["status"] == "stuck"
    assert "queue 'orphans' has 1 job(s) but no live worker consumes it" in \
        data["notice"]["notices"][0]


def test_status_json_flags_a_queue_waiting_too_long(client: Client, r: redis.Redis) -> None:
    wait_for(api.processes, what="the worker's heartbeat")
    api.Queue("default").pause()
    time.sleep(1.5)  # workers re-read the paused set at most once a second
    TaskLoggerJob.perform_later(1)
    jobkit.configure(web={"stuck_after": 0.2})
    try:
        time.sleep(0.4)
        status, _, body = client.get("/status.json")
    finally:
        jobkit.configure()
        api.Queue("default").resume()
    assert status == 503
    [notice] = json.loads(body)["notice"]["notices"]
    assert "queue 'default': the next job has waited" in notice and "is paused" in notice


def test_status_json_is_stuck_without_any_worker(client: Client, redis_server: str) -> None:
    jobkit.configure(redis_url=redis_server.rsplit("/", 1)[0] + "/1")  # a db no worker uses
    try:
        status, _, body = client.get("/status.json")
    finally:
        jobkit.configure()
    assert status == 503
    assert json.loads(body)["notice"]["notices"][0].startswith("no live worker process")


@pytest.fixture
def production(monkeypatch) -> Iterator[None]:
    jobkit.configure(environment="production")
    yield
    jobkit.configure()


def test_outside_development_authentication_is_required(production, monkeypatch) -> None:
    assert Client().get("/")[0] == 403
    monkeypatch.setenv("JOBKIT_WEB_USERNAME", "admin")
    monkeypatch.setenv("JOBKIT_WEB_PASSWORD", "s3cret")
    status, headers, _ = Client().get("/")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    import base64

    good = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
    bad = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"admin:nope").decode()}
    assert Client().get("/", headers=good)[0] == 200
    assert Client().get("/", headers=bad)[0] == 401


def test_host_framework_auth_hook(production) -> None:
    app = create_app(auth=lambda environ: environ.get("HTTP_X_USER") == "ops")
    assert Client(app).get("/")[0] == 403
    assert Client(app).get("/", headers={"HTTP_X_USER": "ops"})[0] == 200


def test_no_secrets_in_pages(client: Client, monkeypatch) -> None:
    monkeypatch.setenv("SMTP_URL", "smtp://user:topsecret@mail.example:25")
    for path in ("/", "/busy", "/status.json"):
        assert "topsecret" not in client.get(path)[2]
