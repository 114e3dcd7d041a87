"""The web app with Redis gone: /status.json answers 503 with a JSON body naming Redis (its URL
masked) and the error, every page a 503 HTML page naming Redis, a frozen Redis costs a page
the web client's timeout (never a hang), and `web: stuck_status: stucked` spells the stuck
status as Shirasagi's monitors expect."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobkit
import jobkit.web
from jobkit.config import current_settings, load_settings, use_settings
from jobkit.errors import ConfigError
from jobkit.testing_services import RedisServer
from jobkit.web.routes import router
from tests.test_web import Client

PASSWORD = "s3cret-pw"
# The pages that never read Redis (mail previews render the app's mailers).
WITHOUT_REDIS = ("/mail/previews",)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A redis-server of the test's own, with a password, in REDIS_URL and the settings."""
    server = RedisServer()
    server.client.config_set("requirepass", PASSWORD)
    monkeypatch.setenv("REDIS_URL", f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0")
    saved = current_settings()
    jobkit.configure()
    yield server
    use_settings(saved)
    server.stop()


def masked_url(server: RedisServer) -> str:
    return f"redis://:***@127.0.0.1:{server.port}/0"


# A value for each path parameter that the page takes for a real one (a set entry's key is
# <score>-<job id>), so that it goes on to read Redis.
PARAMETERS = {"key": "1.5-abc"}


def get_paths() -> list[str]:
    """A path for every GET route: a choice of words takes its first, other parts PARAMETERS'
    value or 1."""
    def value(m: re.Match) -> str:
        name, form = m.groups()
        return form.split("|")[0] if re.fullmatch(r"[\w|]+", form) else PARAMETERS.get(name, "1")

    return [re.sub(r"\(\?P<(\w+)>([^)]*)\)", value, pattern.pattern.strip("^$"))
            + "?key=1"  # /controls/held asks for a key
            for method, pattern, _ in router.routes if method == "GET"]


def assert_names_redis(server: RedisServer, path: str, status: int, headers: dict,
                       text: str) -> None:
    assert status == 503, (path, status, text)
    assert PASSWORD not in text, path
    if path.startswith("/status.json"):
        body = json.loads(text)
        assert headers["Content-Type"] == "application/json"
        assert body["redis"]["url"] == masked_url(server)
        assert body["redis"]["error"].startswith("ConnectionError: ")
        assert body["notice"]["notices"] == [
            f"cannot use Redis at {masked_url(server)}: {body['redis']['error']}"]
    else:
        assert headers["Content-Type"].startswith("text/html"), (path, headers)
        assert "<h1>Redis unavailable</h1>" in text, path
        assert f"cannot use Redis at {masked_url(server)}: ConnectionError: " in text, path


@pytest.mark.parametrize("when", ["before the app", "after a page was served"])
def test_every_page_answers_503_naming_redis(server: RedisServer, when: str) -> None:
    client = Client()
    if when == "after a page was served":  # its connection is in the pool when Redis goes
        assert client.get("/queues")[0] == 200
    server.kill()
    paths = get_paths()
    assert "/status.json?key=1" in paths and "/scheduled/1.5-abc?key=1" in paths
    for path in paths:
        status, headers, text = client.get(path)
        if path.startswith(WITHOUT_REDIS):
            assert status < 500, (path, status, text)
        else:
            assert_names_redis(server, path, status, headers, text)


def test_status_json_names_redis_and_the_error(server: RedisServer) -> None:
    client = Client()
    status, _, text = client.get("/status.json")
    assert status == 503 and json.loads(text)["status"] == "stuck"  # no worker: up, stuck
    assert "redis" not in json.loads(text)
    server.kill()
    status, headers, text = client.get("/status.json")
    assert_names_redis(server, "/status.json", status, headers, text)
    body = json.loads(text)
    assert body["status"] == "stuck" and "Connection refused" in body["redis"]["error"]
    assert headers["Cache-Control"] == "no-store"


def test_a_frozen_redis_answers_503_within_the_timeout(server: RedisServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobkit.web, "REDIS_TIMEOUT_SECONDS", 0.3)
    client = Client()
    assert client.get("/queues")[0] == 200
    answers: list[tuple[int, dict, str]] = []
    os.killpg(server.proc.pid, signal.SIGSTOP)  # connections open, nothing answers
    try:
        asking = threading.Thread(target=lambda: answers.append(client.get("/queues")))
        asking.start()
        asking.join(30)  # without a timeout the page waits for as long as Redis is frozen
        assert not asking.is_alive(), "the page hangs on a frozen Redis"
    finally:
        os.killpg(server.proc.pid, signal.SIGCONT)
    status, _, text = answers[0]
    assert status == 503 and "TimeoutError: Timeout reading from socket" in text


def test_stucked_spelling(server: RedisServer) -> None:
    jobkit.configure(web={"stuck_status": "stucked"})
    client = Client()
    status, _, text = client.get("/status.json")
    assert status == 503 and json.loads(text)["status"] == "stucked"  # no live worker
    server.kill()
    status, _, text = client.get("/status.json")
    assert status == 503 and json.loads(text)["status"] == "stucked"


@pytest.mark.parametrize("value", ["stuckd", "Stucked", 1, ""])
def test_stuck_status_takes_stuck_or_stucked(value: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web\.stuck_status: .* expected one of stuck, "
                                          r"stucked"):
        load_settings(None, environ={}, web={"stuck_status": value})
    path = tmp_path / "jobkit.yml"
    path.write_text(f"web:\n  stuck_status: {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=r"web\.stuck_status.* expected one of stuck, stucked"):
        load_settings(path, environ={})

