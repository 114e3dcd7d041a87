"""Monitoring survives any bytes in Redis; every name in a URL is URL-encoded; no secret shown.

Against the private redis-server (no worker needed). The WSGI client here decodes the path as
wsgiref and every PEP 3333 server do (percent-decoding into PATH_INFO), and one test goes
through a real wsgiref server.
"""

from __future__ import annotations

import base64
import html
import http.client
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlencode
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.util import setup_testing_defaults

import pytest
import redis
from click.testing import CliRunner

from jobkit import api, keys
from jobkit.celery_message import build_task_message
from jobkit.cli import main
from jobkit.job_sets import DeadSet, RetrySet, ScheduledSet
from jobkit.redis_client import get_redis
from jobkit.testing_services import free_port
from jobkit.web import create_app


class Client:
    """A WSGI client with a cookie jar; the path is percent-decoded into PATH_INFO the way
    wsgiref.simple_server does it (PEP 3333: bytes as latin-1)."""

    def __init__(self) -> None:
        self.app = create_app()
        self.cookies: dict[str, str] = {}

    def request(self, method: str, url: str, form: dict | list | None = None
                ) -> tuple[int, dict, str]:
        path, _, query = url.partition("?")
        body = urlencode(form or {}, doseq=True).encode()
        environ = {"REQUEST_METHOD": method, "PATH_INFO": unquote(path, "latin-1"),
                   "QUERY_STRING": query, "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body),
                   "CONTENT_TYPE": "application/x-www-form-urlencoded",
                   "HTTP_COOKIE": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        setup_testing_defaults(environ)
        captured = {}

        def start_response(status, headers):
            captured["status"], captured["headers"] = status, headers

        text = b"".join(self.app(environ, start_response)).decode()
        for name, value in captured["headers"]:
            if name == "Set-Cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";")[0]
        return int(captured["status"].split()[0]), dict(captured["headers"]), text

    def get(self, url: str) -> tuple[int, dict, str]:
        return self.request("GET", url)

    def post(self, url: str, form: dict) -> tuple[int, dict, str]:
        _, _, page = self.get("/queues")
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        return self.request("POST", url, {**form, "csrf": token})


@pytest.fixture
def client(r: redis.Redis) -> Client:
    return Client()


@pytest.fixture
def raw(r: redis.Redis) -> redis.Redis:
    """jobkit's own client (bytes in, bytes out), on the emptied test Redis."""
    return get_redis()


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.output


def task_message(job_id: str, queue: str = "default", **payload: object) -> str:
    body = {"job_class": "tests.jobs.TaskLoggerJob", "job_id": job_id, "queue_name": queue,
            "args": [1], "kwargs": {}, "enqueued_at": 1_700_000_000.0, **payload}
    return build_task_message("tests.jobs.TaskLoggerJob", job_id, [body], queue, None)[1]


def actions(page: str) -> list[str]:
    return [html.unescape(a) for a in re.findall(r'action="([^"]+)"', page)]


def links(page: str) -> list[str]:
    return [html.unescape(a) for a in re.findall(r'href="([^"]+)"', page)]


# Anything can be in a queue's list: these must never break a page, a command or the API.
BAD_ITEMS = [
    b"\xff\xfe\x00 not UTF-8 \xc3\x28",
    b"not JSON at all",
    b"[1, 2, 3]",
    b'"just a string"',
    b"{}",
    b'{"body": "!!!not base64", "properties": {"body_encoding": "base64"}}',
    b'{"body": "W10=", "properties": 5}',
    b"[" * 100_000,  # too deep for json
    json.dumps({"body": "", "properties": {}}).encode(),
]


# A queue no worker consumes: a worker would take these items (and bury them) at once.
UNWATCHED = "reports"


def test_unreadable_queue_items_do_not_break_monitoring(client: Client, raw: redis.Redis
                                                        ) -> None:
    raw.sadd(keys.QUEUES, UNWATCHED)
    raw.lpush(UNWATCHED, task_message("good-1"))
    for item in BAD_ITEMS:
        raw.rpush(UNWATCHED, item)  # the right end: the head, next to run
    odd = task_message("odd-1", enqueued_at="yesterday", scheduled_at=[1], job_class=["x"])
    raw.rpush(UNWATCHED, odd)
    for path in ("/", "/queues", f"/queues/{UNWATCHED}", f"/queues/{UNWATCHED}?start=3"):
        status, _, page = client.get(path)
        assert status == 200, (path, page[:300])
    _, _, page = client.get(f"/queues/{UNWATCHED}")
    assert "not UTF-8" in page and r"\xff\xfe" in page and "good-1" in page
    status, headers, body = client.get("/status.json")
    assert headers["Content-Type"] == "application/json"
    report = json.loads(body)  # ok or stuck: whether the session's worker is up is not ours
    assert (status, report["status"]) in ((200, "ok"), (503, "stuck"))
    assert report["job"]["sizes"][UNWATCHED] == len(BAD_ITEMS) + 2
    code, output = cli("queues")
    assert code == 0 and UNWATCHED in output
    queue = api.Queue(UNWATCHED)
    jobs = queue.jobs(0, 100)
    assert len(jobs) == len(BAD_ITEMS) + 2 and queue.latency() >= 0
    assert [job.job_id for job in jobs if job.problem is None] == ["odd-1", "good-1"]
    assert queue.find("good-1").job_id == "good-1"


def test_a_job_id_with_a_lone_surrogate_is_shown_escaped(client: Client,
                                                         raw: redis.Redis) -> None:
    message = json.loads(task_message("lone"))
    payload = [[{"job_class": "X", "job_id": "\ud800-lone", "args": []}], {}, {}]
    message["body"] = base64.b64encode(json.dumps(payload).encode()).decode()  # JSON "\ud800"
    raw.sadd(keys.QUEUES, UNWATCHED)
    raw.lpush(UNWATCHED, json.dumps(message))
    [job] = api.Queue(UNWATCHED).jobs(0, 10)
    assert job.job_id == "\\ud800-lone" and job.ident == job.digest
    assert api.Queue(UNWATCHED).find(job.ident) == job
    status, _, page = client.get(f"/queues/{UNWATCHED}")
    assert status == 200 and "\\ud800-lone" in page


def test_an_unreadable_queue_item_is_deleted_by_its_exact_bytes(client: Client,
                                                                raw: redis.Redis) -> None:
    raw.sadd(keys.QUEUES, UNWATCHED)
    raw.rpush(UNWATCHED, b"\xff keep me", b"\xff delete me", b"\xff keep me")
    _, _, page = client.get(f"/queues/{UNWATCHED}")
    forms = re.findall(r'<tr><td class="error">unreadable.*?</tr>', page, re.DOTALL)
    assert len(forms) == 3
    # the row of "\xff delete me" posts that item's digest
    [row] = [f for f in forms if "delete me" in f]
    ident = re.search(r'name="job_id" value="([^"]+)"', row).group(1)
    status, _, _ = client.post(f"/queues/{UNWATCHED}", {"action": "delete", "job_id": ident,
                                                   "queue": UNWATCHED})
    assert status == 303
    assert raw.lrange(UNWATCHED, 0, -1) == [b"\xff keep me", b"\xff keep me"]


# Members of the sorted sets: each must list, page, search, show, delete; none may crash.
BAD_MEMBERS = [
    b"\xff\xfe\x00 not UTF-8",
    b"not JSON",
    b"[1]",
    b'"a string"',
    b"42",
    b"{}",
    b'{"job_id": 5, "job_class": ["x"], "error_class": {"a": 1}, "error_message": [1, 2],'
    b' "backtrace": "line 1\\nline 2", "retry_count": "many", "payload": 7, "reason": [],'
    b' "failed_at": "soon", "queue": null}',
    b'{"job_id": "\\ud800-surrogate", "error_message": "\\udcff", "backtrace": [1, null]}',
    b'{"job_id": "a/b?c#d e%2F", "job_class": "X", "message": 5, "list_key": null}',
    b"[" * 100_000,
]


@pytest.mark.parametrize("set_cls, path", [(DeadSet, "dead"), (RetrySet, "retries"),
                                           (ScheduledSet, "scheduled")])
def test_unreadable_set_members_do_not_break_pages_api_or_cli(
        client: Client, raw: redis.Redis, set_cls: type, path: str) -> None:
    job_set = set_cls()
    later = time.time() + 3600  # not due: no worker's poller moves them meanwhile
    for score, member in enumerate(BAD_MEMBERS, start=1):
        raw.zadd(job_set.key, {member: later + score})
    raw.zadd(job_set.key, {b'{"job_id": "later"}': 1e300})  # a time no clock can show
    entries = list(job_set)
    assert len(entries) == len(BAD_MEMBERS) + 1
    assert job_set.page(0, 3) and job_set.search("job_id")
    assert any("surrogate" in e.text for e in job_set.search("\\"))  # a backslash matches
    for entry in entries:
        assert job_set.fetch_key(entry.key) == entry
        assert job_set.find(entry.ident) == entry
    assert job_set.find("a/b?c#d e%2F").job_class == "X"
    for url in (f"/{path}", f"/{path}?start=5", f"/{path}?q=job", f"/{path}?q=%FF", "/"):
        status, _, page = client.get(url)
        assert status == 200, (url, page[:300])
    _, _, page = client.get(f"/{path}")
    assert r"\xff\xfe" in page and "not UTF-8" in page
    detail_links = [link for link in links(page) if link.startswith(f"/{path}/")]
    assert len(detail_links) == len(entries)
    for link in detail_links:
        status, _, detail = client.get(link)
        assert status == 200, (link, detail[:300])
    cli_name = {"dead": "dead", "retries": "retries", "scheduled": "scheduled"}[path]
    code, output = cli(cli_name, "--limit", "100")
    assert code == 0 and f"{len(entries)} in {cli_name}" in output
    assert "(unreadable: not UTF-8" in output


@pytest.mark.parametrize("set_cls, path", [(DeadSet, "dead"), (RetrySet, "retries")])
def test_delete_acts_on_the_exact_member_and_retry_is_refused(
        client: Client, raw: redis.Redis, set_cls: type, path: str) -> None:
    job_set = set_cls()
    later = time.time() + 3600  # not due: no worker's poller moves them meanwhile
    for score, member in enumerate(BAD_MEMBERS, start=1):
        raw.zadd(job_set.key, {member: later + score})
    twin_score = later + 50
    raw.zadd(job_set.key, {b"\xff twin": twin_score, b"\xfe twin": twin_score})  # same score
    [twin] = [e for e in job_set if e.raw == b"\xfe twin"]
    status, _, body = client.post(f"/{path}", {"action": "push", "key": twin.key})
    assert status == 409 and "cannot be sent to a queue" in body and "delete" in body
    assert raw.zscore(job_set.key, b"\xfe twin") == twin_score  # refused, kept
    status, _, _ = client.post(f"/{path}", {"action": "delete", "key": twin.key})
    assert status == 303
    assert raw.zscore(job_set.key, b"\xfe twin") is None
    assert raw.zscore(job_set.key, b"\xff twin") == twin_score  # the other one, untouched
    # detail page: no retry button for an unreadable entry, delete works from it
    [bad] = [e for e in job_set if e.raw.startswith(b"\xff\xfe\x00")]
    _, _, detail = client.get(f"/{path}/{quote(bad.key, safe='')}")
    assert 'value="push"' not in detail and "cannot be read" in detail
    assert r"\xff\xfe\x00 not UTF-8" in detail
    # retry all: every member refused (none is a job), none lost, the loop ends
    size = job_set.size()
    status, _, body = client.post(f"/{path}", {"action": "all", "then": "push"})
    assert status == 409 and job_set.size() == size
    # delete selected, by key, each exact
    keys = [e.key for e in job_set]
    status, _, _ = client.post(f"/{path}", {"action": "delete", "key": keys})
    assert status == 303 and job_set.size() == 0


def test_cli_refuses_to_retry_unreadable_entries_and_deletes_them_by_key(
        raw: redis.Redis) -> None:
    dead = DeadSet()
    now = time.time()  # recent: every bury lets go of entries older than dead_timeout
    raw.zadd(dead.key, {b"\xff garbage": now - 3, b"[1]": now - 2})
    good = {"list_key": UNWATCHED, "message": task_message("fine-1", UNWATCHED),
            "job_id": "fine-1", "job_class": "tests.jobs.TaskLoggerJob"}
    raw.zadd(dead.key, {json.dumps(good): now - 1})
    code, output = cli("dead", "retry", "--all")
    assert code == 1 and "retry: 1 job(s)" in output and "refused, cannot be read" in output
    assert "jobkit dead delete KEY" in output
    assert api.Queue(UNWATCHED).find("fine-1") is not None and dead.size() == 2
    [garbage] = [e for e in dead if e.raw == b"\xff garbage"]
    code, output = cli("dead", "retry", garbage.key)
    assert code == 1 and garbage.key in output and dead.size() == 2
    code, output = cli("dead", "delete", garbage.key)
    assert code == 0 and "delete: 1 job(s)" in output
    assert raw.zscore(dead.key, b"\xff garbage") is None and dead.size() == 1


def test_workers_with_odd_heartbeats_do_not_break_busy_or_status(own_client: redis.Redis
                                                                 ) -> None:
    # A Redis of its own: the session worker's heartbeat would add a third process.
    client, raw = Client(), get_redis()
    raw.sadd("jobkit:processes", b"host\xff:1:abc", b"plain:2:def", b"gone:3:x")
    raw.set(b"jobkit:heartbeat:host\xff:1:abc", b'{"hostname": 5, "pid": "x", "beat_at": "now",'
                                                b' "queues": "default", "concurrency": [2]}')
    raw.set(b"jobkit:heartbeat:plain:2:def", b"\xff not json")
    raw.hset(b"jobkit:unacked:plain:2:def", mapping={
        b"t1": b"\xff", b"t2": b"[1]", b"t3": json.dumps([{"properties": 1}, "", "q"]),
        b"t4": json.dumps([json.loads(task_message("held-1")), "", "default"])})
    status, _, page = client.get("/busy")
    assert status == 200 and page.count("<h2>") == 2  # both live processes, by host name
    assert "<h2>5 pid " in page  # odd heartbeat fields shown as they are
    assert "held-1" in page and "unreadable" in page
    status, _, body = client.get("/status.json")
    assert status == 200 and json.loads(body)["item"]["current_count"] == 2
    assert client.get("/")[0] == 200
    code, output = cli("processes")
    assert code == 0 and r"host\xff:1:abc" in output and "held-1" in output
    assert {p.id for p in api.processes()} == {r"host\xff:1:abc", "plain:2:def"}


def test_a_queue_name_that_is_not_utf8_is_shown_escaped_and_acted_on_exactly(
        client: Client, raw: redis.Redis) -> None:
    raw.sadd("jobkit:queues", b"q\xff", b"q\xfe")
    raw.lpush(b"q\xff", task_message("in-ff"))
    raw.lpush(b"q\xfe", task_message("in-fe"))
    status, _, page = client.get("/queues")
    assert status == 200 and r"q\xff" in page
    [link] = [a for a in links(page) if a.startswith("/queues/q") and "%FF" in a]
    status, _, queue_page = client.get(link)
    assert status == 200 and "in-ff" in queue_page and "in-fe" not in queue_page
    [action] = [a for a in actions(page) if "%FF" in a]
    assert client.post(action, {"action": "pause", "queue": r"q\xff"})[0] == 303
    assert raw.smembers("jobkit:paused") == {b"q\xff"}
    assert client.post(action, {"action": "clear", "queue": r"q\xff"})[0] == 303
    assert raw.llen(b"q\xff") == 0 and raw.llen(b"q\xfe") == 1
    code, output = cli("queues")
    assert code == 0 and r"q\xff" in output


# URL-encoding: every name in a link or form action, decoded back by the routes.

NAMES = ["default?x", "a/b", "a b", "%2F", "#frag", "ünï中文", "a%20b", "x&action=clear",
         "default/", "'\"<>"]


@pytest.fixture
def named_queues(raw: redis.Redis) -> list[str]:
    for name in [UNWATCHED, "a", "b", "x", *NAMES]:
        raw.sadd("jobkit:queues", name)
        raw.lpush(name, task_message(f"job-of-{name}", queue=name))
    return NAMES


def queue_sizes(raw: redis.Redis) -> dict[str, int]:
    return {name: raw.llen(name) for name in [UNWATCHED, "a", "b", "x", *NAMES]}


@pytest.mark.parametrize("name", NAMES)
def test_pause_resume_clear_act_on_exactly_the_named_queue(client: Client, raw: redis.Redis,
                                                          named_queues: list[str],
                                                          name: str) -> None:
    _, _, page = client.get("/queues")
    quoted = quote(name, safe="")
    assert f'action="/queues/{quoted}"' in page
    assert f'href="/queues/{quoted}"' in page
    status, _, queue_page = client.get(f"/queues/{quoted}")
    assert status == 200 and f"job-of-{name}" in html.unescape(queue_page)
    # the dashboard links the same way
    assert f'href="/queues/{quoted}"' in client.get("/")[2]
    assert client.post(f"/queues/{quoted}", {"action": "pause", "queue": name})[0] == 303
    assert raw.smembers("jobkit:paused") == {name.encode()}
    assert client.post(f"/queues/{quoted}", {"action": "resume", "queue": name})[0] == 303
    assert raw.smembers("jobkit:paused") == set()
    before = queue_sizes(raw)
    assert client.post(f"/queues/{quoted}", {"action": "clear", "queue": name})[0] == 303
    assert queue_sizes(raw) == {**before, name: 0}


def test_a_form_and_a_url_naming_different_queues_do_nothing(client: Client, raw: redis.Redis,
                                                              named_queues: list[str]) -> None:
    before = queue_sizes(raw)
    status, _, body = client.post("/queues/default", {"action": "clear", "queue": "default?x"})
    assert status == 400 and "nothing was done" in body
    assert queue_sizes(raw) == before


def test_delete_one_job_in_a_queue_with_an_odd_name(client: Client, raw: redis.Redis,
                                                   named_queues: list[str]) -> None:
    _, _, page = client.get(f"/queues/{quote('a/b', safe='')}")
    [action] = [a for a in actions(page) if a.startswith("/queues/")]
    ident = re.search(r'name="job_id" value="([^"]+)"', page).group(1)
    before = queue_sizes(raw)
    assert client.post(action, {"action": "delete", "job_id": ident, "queue": "a/b"})[0] == 303
    assert queue_sizes(raw) == {**before, "a/b": 0}


@pytest.mark.parametrize("job_id", ["a/b", "x?y=1#z", "a b%2F", "ünï", "1.5-2", "-"])
def test_set_entries_with_odd_job_ids_open_and_delete(client: Client, raw: redis.Redis,
                                                      job_id: str) -> None:
    dead = DeadSet()
    now = time.time()  # recent: a bury lets go of entries older than dead_timeout
    for other in ("a", "x", "b"):
        dead.add(now, "default", task_message(other), job_id=other, job_class="X")
    dead.add(now, "default", task_message(job_id), job_id=job_id, job_class="Odd")
    _, _, page = client.get("/dead")
    [entry] = [e for e in dead if e.job_id == job_id]
    link = f"/dead/{quote(entry.key, safe='')}"
    assert link in links(page)
    status, _, detail = client.get(link)
    assert status == 200 and "<h1>Odd</h1>" in detail
    assert client.post("/dead", {"action": "delete", "key": entry.key})[0] == 303
    assert sorted(e.job_id for e in dead) == ["a", "b", "x"]


@pytest.fixture
def served(r: redis.Redis) -> Iterator[str]:
    """The app behind a real wsgiref server, as `jobkit web` serves it."""

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = make_server("127.0.0.1", free_port(), create_app(), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_links_work_through_a_real_server(served: str, raw: redis.Redis,
                                          named_queues: list[str]) -> None:
    def fetch(method: str, path: str, body: str = "", cookie: str = ""
              ) -> tuple[int, dict, str]:
        conn = http.client.HTTPConnection(served, timeout=10)
        conn.request(method, path, body, {"Cookie": cookie,
                                          "Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()

    _, headers, page = fetch("GET", "/queues")
    cookie = headers["Set-Cookie"].split(";")[0]
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    for name in ("a/b", "default?x", "%2F", "ünï中文"):
        [action] = [a for a in actions(page) if a == f"/queues/{quote(name, safe='')}"]
        status, _, queue_page = fetch("GET", action)
        assert status == 200 and f"job-of-{name}" in html.unescape(queue_page), name
        before = queue_sizes(raw)
        body = urlencode({"csrf": token, "action": "clear", "queue": name})
        assert fetch("POST", action, body, cookie)[0] == 303
        assert queue_sizes(raw) == {**before, name: 0}


# Secrets: a Redis error is shown, masked.

def test_a_redis_error_is_a_clear_masked_answer(client: Client, monkeypatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("Error connecting to redis://:hunter2@db.internal:6379/0")

    monkeypatch.setattr(api, "queues", fail)
    status, headers, body = client.get("/queues")
    assert status == 503 and headers["Content-Type"].startswith("text/html")
    assert "cannot use Redis at" in body and "hunter2" not in body
    assert "redis://:***@db.internal:6379/0" in body
    status, _, body = client.get("/status.json")
    data = json.loads(body)
    assert status == 503 and data["status"] == "stuck" and "hunter2" not in body
    assert "cannot use Redis at" in data["notice"]["notices"][0]
    code, output = cli("queues")
    assert code == 1 and "cannot reach Redis" in output and "hunter2" not in output


def test_an_unreachable_redis_is_a_clear_answer(client: Client, monkeypatch) -> None:
    import jobkit

    port = free_port()
    jobkit.configure(redis_url=f"redis://:hunter2@127.0.0.1:{port}/0")
    try:
        status, _, body = client.get("/")
        assert status == 503 and "cannot use Redis at" in body and "hunter2" not in body
        assert client.get("/dead")[0] == 503
        monkeypatch.setenv("REDIS_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
        code, output = cli("dead")
        assert code == 1 and "cannot reach Redis" in output and "hunter2" not in output
    finally:
        jobkit.configure()
