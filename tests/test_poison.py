"""Poison messages: any item on a queue's list, among valid jobs, on a real worker.

Every item pushed is accounted for afterwards (it ran, or it is in the dead set with a reason;
the queue is empty), every valid job ran, and the worker is still up. Items come from the
shapes the issue names and from hypothesis: raw bytes, any JSON, and valid envelopes with
fields removed or replaced (null, numbers, strings, broken base64 bodies, pickle...).
"""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import jobkit
from jobkit import keys
from jobkit.celery_message import build_message
from jobkit.config import current_settings, use_settings
from jobkit.testing_services import RedisServer, wait_until
from tests.conftest import start_worker
from tests.jobs import CountJob

QUEUE = "poison"
VALID_PER_BATCH = 5


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    server = RedisServer()
    before = current_settings()
    jobkit.configure(redis_url=server.url)
    yield server
    use_settings(before)
    server.stop()


@pytest.fixture(scope="module", params=["prefork", "threads"])
def poisoned_worker(server: RedisServer, tmp_path_factory: pytest.TempPathFactory,
                    request: pytest.FixtureRequest) -> Iterator[Any]:
    proc = start_worker(server.url, tmp_path_factory.mktemp("poison") / "worker.log", "-q",
                        QUEUE, "-P", request.param, "-c", "2")
    yield proc
    proc.stop()


class Item:
    """One pushed item: its bytes, a marker to find it in the dead set, and the CountJob
    number it carries if it can still run."""

    counter = 10_000

    def __init__(self, data: bytes, marker: str, runs_as: int | None = None) -> None:
        self.data, self.marker, self.runs_as = data, marker, runs_as


def envelope(marker: str) -> tuple[dict[str, Any], int]:
    """A valid CountJob envelope carrying `marker`, and the number it marks done."""
    Item.counter += 1
    job = CountJob(Item.counter)
    job._prepare(queue=QUEUE)
    _key, message = build_message(job.serialize(), f"poison-{marker}")
    data = json.loads(message)
    data["jk_marker"] = marker
    return data, Item.counter


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# The shapes the issue names, each as a change to a valid envelope.
ISSUE_SHAPES = {
    "delivery_info null": lambda m: m["properties"].__setitem__("delivery_info", None),
    "delivery_info a number": lambda m: m["properties"].__setitem__("delivery_info", 7),
    "empty body": lambda m: m.__setitem__("body", ""),
    "body not base64": lambda m: m.__setitem__("body", "%%% not base64 %%%"),
    "body base64 of bytes that are not UTF-8": lambda m: m.__setitem__("body", b64(b"\xff\xfe")),
    "body base64 of JSON that is not a list": lambda m: m.__setitem__("body", b64(b'{"a":1}')),
    "body's args not a list": lambda m: m.__setitem__("body", b64(b'[5, {}, {}]')),
    "body's callbacks a number": lambda m: m.__setitem__(
        "body", b64(json.dumps([[1], {}, {"callbacks": 5, "chord": "x"}]).encode())),
    "headers null": lambda m: m.__setitem__("headers", None),
    "headers a list": lambda m: m.__setitem__("headers", [1, 2]),
    "unknown task": lambda m: m["headers"].__setitem__("task", "no.such.Task"),
    "task a number": lambda m: m["headers"].__setitem__("task", 12),
    "pickle": lambda m: (m.__setitem__("content-type", "application/x-python-serialize"),
                         m.__setitem__("body", b64(pickle.dumps({"a": 1})))),
    "no delivery tag": lambda m: m["properties"].pop("delivery_tag"),
    "properties a string": lambda m: m.__setitem__("properties", "x"),
}


def issue_items() -> list[Item]:
    items = []
    for change in ISSUE_SHAPES.values():
        marker = uuid.uuid4().hex
        data, _ = envelope(marker)
        change(data)
        items.append(Item(encode(data), marker))
    marker = uuid.uuid4().hex
    items += [
        Item(marker.encode() + b" not JSON", marker),
        Item(b"\xff\xfe" + (m2 := uuid.uuid4().hex).encode() + b"\x80", m2),
        Item(encode([(m3 := uuid.uuid4().hex), 1, None]), m3),
        Item(encode({"jk_marker": (m4 := uuid.uuid4().hex), "x": "y" * 2_000_000}), m4),
    ]
    return items


PATHS = [("properties",), ("properties", "delivery_info"), ("properties", "delivery_tag"),
         ("properties", "delivery_info", "routing_key"), ("properties", "delivery_info",
                                                          "exchange"),
         ("properties", "priority"), ("properties", "body_encoding"), ("headers",),
         ("headers", "task"), ("headers", "id"), ("headers", "retries"),
         ("headers", "timelimit"), ("headers", "eta"), ("headers", "expires"),
         ("headers", "argsrepr"), ("body",), ("content-type",), ("content-encoding",)]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)
bodies = st.one_of(st.binary(max_size=40).map(b64), json_values.map(
    lambda v: b64(json.dumps(v).encode())), st.text(max_size=20))


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> Item:
    marker = uuid.uuid4().hex
    data, number = envelope(marker)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(bodies if path == ("body",) else json_values)
    return Item(encode(data), marker, runs_as=number)


@st.composite
def junk(draw: st.DrawFn) -> Item:
    marker = uuid.uuid4().hex
    kind = draw(st.sampled_from(["bytes", "json"]))
    if kind == "bytes":
        return Item(draw(st.binary(max_size=60)) + marker.encode(), marker)
    return Item(encode([marker, draw(json_values)]), marker)


def push_and_account(client: redis.Redis, worker: Any, items: list[Item]) -> None:
    """Push `items` among valid jobs, then check that each is accounted for."""
    client.delete("test:done", keys.DEAD)
    valid = [envelope(uuid.uuid4().hex) for _ in range(VALID_PER_BATCH)]
    with client.pipeline(transaction=False) as pipe:
        for i, item in enumerate(items):
            if i < len(valid):
                pipe.lpush(QUEUE, encode(valid[i][0]))
            pipe.lpush(QUEUE, item.data)
        for data, _ in valid[len(items):]:
            pipe.lpush(QUEUE, encode(data))
        pipe.lpush(keys.wake_key(QUEUE), "1")
        pipe.execute()

    def unaccounted() -> list[Item]:
        ran = {int(n) for n in client.smembers("test:done")}
        dead = b"\n".join(client.zrange(keys.DEAD, 0, -1))
        missing = [item for item in items
                   if item.marker.encode() not in dead and item.runs_as not in ran]
        missing += [Item(b"valid job", "", n) for _, n in valid if n not in ran]
        return missing

    try:
        wait_until(lambda: not unaccounted() and client.llen(QUEUE) == 0, timeout=60)
    except TimeoutError:
        missing = [(item.data[:300], item.runs_as) for item in unaccounted()]
        pytest.fail(f"not accounted for: {missing}; queue length {client.llen(QUEUE)}\n"
                    f"{worker.output()[-3000:]}")
    try:
        wait_until(lambda: not in_flight(client), timeout=15)
    except TimeoutError:
        pytest.fail(f"left in flight: {in_flight(client)}\n{worker.output()[-3000:]}")
    assert worker.proc.poll() is None, worker.output()[-3000:]
    assert "Unrecoverable error" not in worker.output(), worker.output()[-3000:]


def in_flight(client: redis.Redis) -> list[bytes]:
    return [value for key in client.keys(keys.unacked("*")) for value in client.hvals(key)]


def test_the_shapes_the_issue_names(server: RedisServer, poisoned_worker: Any) -> None:
    push_and_account(server.client, poisoned_worker, issue_items())
    reasons = {entry.error_message for entry in jobkit.api.DeadSet(server.client)}
    assert "no properties.delivery_info object" in reasons
    assert "empty or missing body" in reasons
    assert "body is not valid base64" in reasons
    assert "not JSON" in reasons


# No shrinking: each example drains a real worker, and a failure prints its items whole.
@settings(max_examples=20, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(items=st.lists(st.one_of(mutated_envelopes(), junk()), min_size=5, max_size=25))
def test_generated_items(server: RedisServer, poisoned_worker: Any, items: list[Item]) -> None:
    push_and_account(server.client, poisoned_worker, items)
