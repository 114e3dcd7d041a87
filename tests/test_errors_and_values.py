"""Every jobkit error survives pickling (a prefork pool sends errors between processes), and
every adapter agrees on which argument values can be sent: each accepts a value and the job
sees it unchanged, or each refuses it at enqueue with the same SerializationError."""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import importlib
import inspect
import math
import pickle
import pkgutil
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from celery.utils.serialization import get_pickleable_exception
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.utils.json import loads as kombu_loads

import jobkit
from jobkit import api, testing
from jobkit.celery_message import build_message
from jobkit.errors import JobkitError, SerializationError
from jobkit.job import Job
from jobkit.keys import list_key
from jobkit.testing_services import wait_until
from tests.conftest import Worker, wait_for
from tests.error_jobs import (
    VALUES_QUEUE,
    Bits,
    Color,
    Count,
    Level,
    Perm,
    RaisesDeserializationErrorJob,
    RecordJob,
    RetriesDeserializationErrorJob,
    Shade,
    Tag,
    received,
)

# -- every error survives pickling ---------------------------------------------------------------


def jobkit_error_classes() -> list[type[JobkitError]]:
    """Every JobkitError subclass defined in the jobkit package (every module imported first),
    so a class added later is covered without touching this test."""
    for module in pkgutil.walk_packages(jobkit.__path__, "jobkit."):
        if not module.name.endswith(".__main__"):
            importlib.import_module(module.name)
    found: set[type[JobkitError]] = set()
    todo = [JobkitError]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return sorted((cls for cls in found if cls.__module__.split(".")[0] == "jobkit"),
                  key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


ERROR_CLASSES = jobkit_error_classes()


def test_the_walk_finds_the_errors_of_every_module() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {"JobkitError", "SerializationError", "DeserializationError", "Abort",
            "MailerError", "TransientDeliveryError"} <= names


def constructor_arguments(cls: type[JobkitError]) -> dict[str, str]:
    """A distinct text for each parameter the class's constructor names (none: a message)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except ValueError:  # Exception's own constructor: no signature to read
        parameters = []
    named = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {name: f"<{name} of {cls.__name__}>" for name in named}


def made(cls: type[JobkitError], by_keyword: bool = False) -> JobkitError:
    named = constructor_arguments(cls)
    if not named:
        return cls(f"{cls.__name__} went wrong")
    return cls(**named) if by_keyword else cls(*named.values())


def assert_same_error(back: BaseException, error: BaseException) -> None:
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert repr(back) == repr(error)
    assert back.args == error.args
    assert vars(back) == vars(error)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__qualname__)
@pytest.mark.parametrize("by_keyword", [False, True], ids=["positional", "keyword"])
def test_every_jobkit_error_survives_pickling(cls: type[JobkitError], by_keyword: bool) -> None:
    error = made(cls, by_keyword)
    for name, value in constructor_arguments(cls).items():
        assert getattr(error, name, value) == value  # attributes named like the parameters
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert_same_error(pickle.loads(pickle.dumps(error, protocol)), error)
    assert_same_error(copy.copy(error), error)
    # What Celery's prefork pool sends back: the error itself, not its nearest pickleable base.
    assert get_pickleable_exception(error) is error


def test_pickling_keeps_attributes_set_later_and_notes() -> None:
    error = SerializationError("args[0]", "not serializable")
    error.add_note("while enqueueing ReportJob")
    error.hint = "pass the id, not the record"
    back = pickle.loads(pickle.dumps(error))
    assert (back.path, back.reason, back.hint) == ("args[0]", "not serializable",
                                                   "pass the id, not the record")
    assert back.__notes__ == ["while enqueueing ReportJob"]
    assert str(back) == "args[0]: not serializable"


def test_serialization_error_is_still_a_type_error_after_pickling() -> None:
    back = pickle.loads(pickle.dumps(SerializationError("kwargs['x']", "bad")))
    assert isinstance(back, TypeError)


# -- end to end: a real prefork worker keeps the error's real class --------------------------------


def _worker_line(worker: Worker, task_id: str | None, text: str) -> str | None:
    return next((line for line in worker.output().splitlines()
                 if f"[{task_id}]" in line and text in line), None)


def test_worker_records_and_logs_deserialization_error_by_its_class(
        r: redis.Redis, worker: Worker) -> None:
    job = RaisesDeserializationErrorJob.perform_later("args[0]", "record gone (deleted?)")
    wait_for(lambda: api.DeadSet().find(job.job_id), what="the dead-set entry")
    dead = api.DeadSet().find(job.job_id)
    assert dead is not None
    assert dead.error_class == "jobkit.errors.DeserializationError"
    assert dead.error_message == "args[0]: record gone (deleted?)"
    # The pool process sends the error to the main process; before, it arrived (and was
    # logged) as its nearest base class that could be unpickled: JobkitError.
    line = wait_for(lambda: _worker_line(worker, job.provider_job_id, "raised unexpected"),
                    what="Celery's failure line in the worker log")
    assert "DeserializationError('args[0]: record gone (deleted?)')" in str(line)
    assert "JobkitError" not in str(line)


def test_worker_puts_deserialization_error_in_the_retry_set_by_its_class(
        r: redis.Redis, worker: Worker) -> None:
    job = RetriesDeserializationErrorJob.perform_later("args[1]", "bad row")
    wait_for(lambda: api.RetrySet().find(job.job_id), what="the retry-set entry")
    entry = api.RetrySet().find(job.job_id)
    assert entry is not None
    assert entry.error_class == "jobkit.errors.DeserializationError"
    assert entry.error_message == "args[1]: bad row"
    assert entry.retry_count == 0
    api.RetrySet().delete(entry)  # not retried later, in another test


def test_argument_the_worker_cannot_rebuild_keeps_its_class(
        r: redis.Redis, worker: Worker) -> None:
    """Failing in Job.deserialize, before perform(): here an enum marker naming no member, as
    an older jobkit wrote combined flags."""
    payload = {**RecordJob("x").serialize(), "queue_name": "default",
               "args": [{"_jk": "enum", "v": ["tests.error_jobs:Perm", "R|W"]}]}
    task_id = f"task-{payload['job_id']}"
    r.lpush(*build_message(payload, task_id))
    wait_for(lambda: api.DeadSet().find(payload["job_id"]), what="the dead-set entry")
    dead = api.DeadSet().find(payload["job_id"])
    assert dead is not None
    assert dead.error_class == "jobkit.errors.DeserializationError"
    assert dead.error_message == "args[0]: bad enum value ['tests.error_jobs:Perm', 'R|W']: 'R|W'"
    line = wait_for(lambda: _worker_line(worker, task_id, "raised unexpected"),
                    what="Celery's failure line in the worker log")
    assert "raised unexpected: DeserializationError(\"args[0]: bad enum value" in str(line)


# -- every adapter agrees ------------------------------------------------------------------------

MODES = ("test", "inline", "async", "celery", "fake mode", "inline mode")


class Modes:
    """Enqueue one call under every adapter and testing mode; say what each did with it.

    Each outcome is ("refused", message) for a SerializationError at enqueue, ("sent", (args,
    kwargs)) with the arguments the job got (as a worker would rebuild them, for celery), or
    ("error", description) for anything else.
    """

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        jobkit.use_adapter("async")
        self.async_adapter = jobkit.use_adapter(None)  # one thread pool for the whole test

    def close(self) -> None:
        shutdown = getattr(self.async_adapter, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def outcomes(self, args: list, kwargs: dict) -> dict[str, tuple[str, Any]]:
        return {mode: self.outcome(mode, args, kwargs) for mode in MODES}

    def outcome(self, mode: str, args: list, kwargs: dict) -> tuple[str, Any]:
        try:
            with self.mode(mode):
                job = RecordJob.perform_later(*args, **kwargs)
                return "sent", self.arguments_seen(mode, job)
        except SerializationError as exc:
            return "refused", str(exc)
        except Exception as exc:  # noqa: BLE001 - any other failure is the finding
            return "error", f"{type(exc).__module__}.{type(exc).__name__}: {exc}"

    @contextlib.contextmanager
    def mode(self, mode: str) -> Iterator[None]:
        if mode in ("fake mode", "inline mode"):
            with testing.fake() if mode == "fake mode" else testing.inline():
                yield
            return
        previous = jobkit.use_adapter(self.async_adapter if mode == "async" else mode)
        try:
            yield
        finally:
            jobkit.use_adapter(previous)

    def arguments_seen(self, mode: str, job: Job) -> tuple[list, dict] | None:
        if mode == "test":
            return None  # records only
        if mode == "celery":
            return self.from_redis(job)
        if mode == "fake mode":
            testing.drain_all()
        elif mode == "async":  # a TimeoutError if it failed on its thread
            wait_until(lambda: job.job_id in received, timeout=3, every=0.002,
                       what="the async job performed")
        args, kwargs = received.pop(job.job_id)
        return list(args), kwargs

    def from_redis(self, job: Job) -> tuple[list, dict]:
        """The message as the worker reads it: kombu's JSON, then the payload's arguments."""
        key = list_key(VALUES_QUEUE, None)
        messages = self.r.lrange(key, 0, -1)
        self.r.delete(key)
        [message] = [m for m in messages if job.provider_job_id in m]
        envelope = kombu_loads(message)
        [[payload], _, _] = kombu_loads(base64.b64decode(envelope["body"]))
        back = Job.deserialize(payload)
        return list(back.arguments), back.kwargs


@pytest.fixture
def modes(r: redis.Redis) -> Iterator[Modes]:
    every = Modes(r)
    yield every
    every.close()


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (NaN equals NaN; -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, set | frozenset):
        rest = list(b)
        for x in a:
            match = next((i for i, y in enumerate(rest) if same(x, y)), None)
            if match is None:
                return False
            rest.pop(match)
        return not rest
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.fold == b.fold and a.tzinfo == b.tzinfo and (
            a.utcoffset() == b.utcoffset())
    return a == b


def assert_all_agree(outcomes: dict[str, tuple[str, Any]], args: list, kwargs: dict) -> str:
    """Every mode refused with one message, or every mode sent it and the job saw the same
    arguments; returns "refused" or "sent"."""
    shown = "\n".join(f"  {mode:12} {kind}: {detail!r}"[:600]
                      for mode, (kind, detail) in outcomes.items())
    kinds = {kind for kind, _ in outcomes.values()}
    assert len(kinds) == 1 and kinds != {"error"}, f"the adapters disagree:\n{shown}"
    if kinds == {"refused"}:
        assert len({detail for _, detail in outcomes.values()}) == 1, (
            f"refused with different messages:\n{shown}")
        return "refused"
    for mode, (_, seen) in outcomes.items():
        if mode == "test":
            continue  # the test adapter records only: nothing performed the job
        assert seen is not None and same(seen, (args, kwargs)), (
            f"{mode}: the job saw {seen!r}, not {(args, kwargs)!r}")
    return "sent"


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def holds_itself() -> list:
    value: list = [1]
    value.append(value)
    return value


REFUSED: list[tuple[str, Callable[[], tuple[list, dict]], str]] = [
    ("lone surrogate", lambda: (["ok", "\ud800"], {}), "args[1]"),
    # two code points, not one: JSON would read them back as one ("😀"), UTF-8 cannot write them
    ("surrogate pair", lambda: (["\ud83d\ude00"], {}), "args[0]"),
    ("surrogate in a keyword value", lambda: ([], {"note": "a\udfffb"}), "kwargs['note']"),
    ("surrogate in a dict key", lambda: ([{"k\ud800": 1}], {}), "args[0]<key 'k\\ud800'>"),
    ("surrogate in a keyword name", lambda: ([], {"\udc80": 1}), "kwargs<key '\\udc80'>"),
    ("surrogate deep inside", lambda: ([[{"a": ("x", {1: {"\ud83d"}})}]], {}),
     "args[0][0]['a'][1][1][0]"),
    ("surrogate as a non-str dict key", lambda: ([{1: 2, "\ud800": 3}], {}),
     "args[0]<key '\\ud800'>"),
    ("combined flags", lambda: ([Perm.R | Perm.W], {}), "args[0]"),
    ("no flag at all", lambda: ([], {"perm": Perm(0)}), "kwargs['perm']"),
    ("unknown IntFlag bits", lambda: ([Bits(8)], {}), "args[0]"),
    ("combined flags as a set member", lambda: ([{Bits.LOW | Bits.HIGH}], {}), "args[0][0]"),
    ("int of 4301 digits", lambda: ([10**4300], {}), "args[0]"),
    ("negative int of 4301 digits", lambda: ([[-(10**4300)]], {}), "args[0][0]"),
    ("list holding itself", lambda: ([holds_itself()], {}), "args[0]"),
    ("nesting of 101 lists", lambda: ([nested(101)], {}), "args[0]"),
    ("keyword named __type__", lambda: ([], {"__type__": "x", "__value__": "y"}),
     "kwargs['__type__']"),
    ("str subclass", lambda: ([Tag("x")], {}), "args[0]"),
    ("int subclass", lambda: ([], {"n": Count(3)}), "kwargs['n']"),
]


@pytest.mark.parametrize(("what", "call", "path"), REFUSED, ids=[w for w, _, _ in REFUSED])
def test_every_adapter_refuses_at_enqueue_naming_the_path(
        modes: Modes, what: str, call: Callable[[], tuple[list, dict]], path: str) -> None:
    args, kwargs = call()
    outcomes = modes.outcomes(args, kwargs)
    assert assert_all_agree(outcomes, args, kwargs) == "refused"
    _, message = outcomes["celery"]
    assert message.startswith(f"{path}: ") or message.startswith(f"{path}["), message
    assert modes.r.llen(list_key(VALUES_QUEUE, None)) == 0


ACCEPTED: list[tuple[str, Callable[[], tuple[list, dict]]]] = [
    ("text beyond ASCII", lambda: (["😀 é \u2028 \x00"], {"é": "ü"})),
    ("int of 4300 digits", lambda: ([10**4300 - 1, -(10**4300 - 1)], {})),
    ("nesting of 100 lists", lambda: ([nested(100)], {})),
    ("NaN and infinities", lambda: ([math.nan, math.inf, -math.inf, -0.0], {})),
    ("flags one by one", lambda: ([{Perm.R, Perm.W}, Bits.HIGH], {"perm": Perm.X})),
    ("enum alias, IntEnum, StrEnum", lambda: ([Color.CRIMSON, Level.HIGH, Shade.DARK], {})),
    ("marker-like keys", lambda: ([{"_jk": 1, "__type__": "datetime", "__value__": "x"}],
                                  {"_jk": 2, "__value__": 3})),
    ("non-str keys", lambda: ([{1: "a", (2, "b"): None, None: 1.5, Shade.LIGHT: b"\0"}], {})),
    ("datetime edges", lambda: ([dt.datetime.min, dt.datetime.max.replace(tzinfo=dt.UTC),
                                 dt.time(0, 0, fold=1), dt.timedelta.min, dt.timedelta.max],
                                {})),
]


@pytest.mark.parametrize(("what", "call"), ACCEPTED, ids=[w for w, _ in ACCEPTED])
def test_every_adapter_sends_what_the_others_send(
        modes: Modes, what: str, call: Callable[[], tuple[list, dict]]) -> None:
    args, kwargs = call()
    assert assert_all_agree(modes.outcomes(args, kwargs), args, kwargs) == "sent"


# Values of every kind jobkit supports, refuses, or might get wrong at the edges.
text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=6),  # lone surrogates included
    st.sampled_from(["\ud800", "a\udfff", "\ud83d\ude00", "😀", "é", "\x00", "_jk"]),
)
enums = st.sampled_from([*Perm, Perm.R | Perm.W, Perm(0), *Bits, Bits.LOW | Bits.HIGH,
                         *Color, *Level, *Shade])
timezones = st.one_of(st.none(), st.timezones(), st.just(dt.UTC),
                      st.integers(-23 * 60, 23 * 60).map(
                          lambda m: dt.timezone(dt.timedelta(minutes=m))))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.sampled_from([2**63, -(2**64), 10**300]),  # 4,300 digits and over: REFUSED, ACCEPTED
    st.floats(), text, st.binary(max_size=6), st.decimals(), st.uuids(), st.dates(),
    st.datetimes(timezones=timezones), st.times(timezones=timezones), st.timedeltas(), enums,
    st.builds(Tag, text), st.builds(Count, st.integers()),
)
keys = st.one_of(text, st.sampled_from(["_jk", "__type__", "__value__", "v"]))
hashables = st.recursive(scalars.filter(lambda v: not (isinstance(v, Decimal) and v.is_snan())),
                         lambda inner: st.one_of(
    st.tuples(inner, inner), st.frozensets(inner, max_size=3)), max_leaves=4)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.tuples(inner, inner),
    st.dictionaries(keys, inner, max_size=3),
    st.dictionaries(hashables, inner, max_size=3),
    st.sets(hashables, max_size=3),
    st.frozensets(hashables, max_size=3),
), max_leaves=8)
deep = st.integers(95, 105).map(nested)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.one_of(values, deep), max_size=3),
       kwargs=st.dictionaries(keys, values, max_size=3))
def test_every_adapter_agrees_on_every_value(modes: Modes, args: list, kwargs: dict) -> None:
    assert_all_agree(modes.outcomes(args, kwargs), args, kwargs)


