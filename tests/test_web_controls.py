"""The controls' read API (`jobkit.api`) and the Controls pages, on real state in the private
Redis: jobs enqueued with unique, concurrency and debounce options, held jobs admitted the way
a worker's transport admits them, and rate limiters acquired. No worker consumes queue
"controls", so nothing runs or moves while a test looks.
"""

from __future__ import annotations

import html
import re
import time

import pytest
import redis

import jobkit
from jobkit import Job, api, keys, limiter
from jobkit.controls import Concurrency, Debounce, concurrency
from jobkit.display import digest
from jobkit.redis_client import get_redis
from tests.test_web import Client

QUEUE = "controls"  # consumed by no worker of the session
IN_FLIGHT = (keys.unacked("web-controls-test"), keys.unacked_index("web-controls-test"))


class LockedJob(Job):
    queue_as = QUEUE
    unique_for = 3600

    def perform(self, account: str) -> None: ...


class OneAtATimeJob(Job):
    queue_as = QUEUE
    limits_concurrency = Concurrency(to=1, key=lambda job: job.arguments[0], duration=60)

    def perform(self, account: str, n: int, note: str = "") -> None: ...


class SettleJob(Job):
    queue_as = QUEUE
    debounce = Debounce(within=3600, by=lambda job: job.arguments[0])

    def perform(self, account: str, n: int) -> None: ...


ONE_AT_A_TIME = "tests.test_web_controls.OneAtATimeJob"


@pytest.fixture
def client(r: redis.Redis) -> Client:
    return Client()


def hold(jobs: list[OneAtATimeJob]) -> list[str]:
    """Enqueue `jobs`, then take each from the queue and admit it as a worker's transport
    does, oldest first: the first takes the key's one slot, the others are held. Returns
    the job ids in enqueue order."""
    jobkit.perform_all_later(jobs)
    ids = [job.job_id for job in jobs]
    client = get_redis()
    queued = {job.job_id: job for job in api.Queue(QUEUE, client).jobs(0, 1000)}
    for job_id in ids:
        job = queued[job_id]
        assert client.lrem(QUEUE, 1, job.message) == 1  # fetched by a worker
        concurrency.admit(client, job.payload["controls"]["concurrency"], job_id,
                          f"tag-{job_id}", QUEUE, job.message, *IN_FLIGHT)
    return ids


def section(page: str, title: str) -> str:
    """The part of the Controls page from heading `title` to the next heading."""
    start = page.index(f"<h2>{title}")
    end = page.find("<h2>", start + 1)
    return page[start:end if end != -1 else len(page)]


# -- the API ---------------------------------------------------------------------------------------

def test_the_api_reads_locks_limits_held_jobs_debounced_jobs_and_limiters(
        r: redis.Redis) -> None:
    locked = LockedJob.perform_later("acme")
    assert LockedJob.perform_later("acme").duplicate_of == locked.job_id
    ids = hold([OneAtATimeJob("acme", 0), OneAtATimeJob("acme", 1),
                OneAtATimeJob("acme", 2, note="x")])
    first = SettleJob.perform_later("acme", 1)
    last = SettleJob.perform_later("acme", 2)
    with limiter.window("stripe", 10, "minute").acquire():
        pass

    [lock] = api.unique_locks()
    assert lock.key.startswith("tests.test_web_controls.LockedJob:") and lock.ident == lock.key
    assert lock.job_id == locked.job_id and 3590 < (lock.ttl or 0) <= 3600

    [limit] = api.concurrency_limits()
    assert limit.key == f"{ONE_AT_A_TIME}:acme" and list(limit.running) == [ids[0]]
    assert limit.held == 2 and limit.running[ids[0]] > time.time() + 50
    held = api.held_jobs(limit.key)
    assert [job.job_id for job in held] == ids[1:]  # oldest first
    assert [(job.job_class, job.queue, job.args, job.problem) for job in held] == [
        (ONE_AT_A_TIME, QUEUE, "['acme', 1]", None),
        (ONE_AT_A_TIME, QUEUE, "['acme', 2] kwargs={'note': 'x'}", None)]
    assert all(time.time() - 10 < (job.held_at or 0) <= time.time() for job in held)
    assert [job.job_id for job in api.held_jobs(limit.key, start=1, count=5)] == ids[2:]
    assert api.held_count(limit.key) == 2 and api.held_jobs("no such key") == []
    # a client that decodes replies reads the same
    [decoded] = api.unique_locks(client=r)
    assert (decoded.key, decoded.job_id, decoded.raw) == (lock.key, lock.job_id, lock.raw)
    assert api.held_jobs(limit.key, client=r) == held
    assert api.debounced(client=r) == api.debounced()

    [pending] = api.debounced()
    assert (pending.job_id, pending.job_class, pending.queue, pending.problem) == (
        last.job_id, "tests.test_web_controls.SettleJob", QUEUE, None)
    assert pending.job_id != first.job_id and pending.due is not None
    assert 3500 < pending.due - time.time() <= 3600

    assert api.limiters() == [{"kind": "window", "name": "stripe", "count": 10,
                               "interval": 60.0, "used": 1.0, "retry_after": 0.0}]

    assert api.release_unique_lock(lock.key) is True
    assert api.unique_locks() == [] and api.release_unique_lock(lock.key) is False
    assert LockedJob.perform_later("acme").duplicate_of is None


def test_a_debounced_job_that_left_the_scheduled_set_has_no_due_time(r: redis.Redis) -> None:
    job = SettleJob.perform_later("acme", 1)
    [member] = r.zrange(keys.SCHEDULE, 0, -1)
    r.zrem(keys.SCHEDULE, member)  # what the poller does when the window ends
    [pending] = api.debounced()
    assert pending.job_id == job.job_id and pending.due is None


def test_limits_bound_the_scans(r: redis.Redis) -> None:
    for n in range(5):
        LockedJob.perform_later(f"account-{n}")
        SettleJob.perform_later(f"account-{n}", 0)
    assert len(api.unique_locks(limit=3)) == 3 and len(api.unique_locks()) == 5
    assert len(api.debounced(limit=2)) == 2 and api.debounced(limit=0) == []
    keys_ = [lock.key for lock in api.unique_locks()]
    assert keys_ == sorted(keys_)


# -- the pages ------------------------------------------------------------------------------------

def test_the_page_shows_every_section(client: Client, r: redis.Redis) -> None:
    locked = LockedJob.perform_later("<b>acme</b>")
    ids = hold([OneAtATimeJob("<i>k</i>", n) for n in range(2)])
    pending = SettleJob.perform_later("acme", 1)
    slow = limiter.concurrent("pdf-render", 2)
    with slow.acquire():
        status, headers, page = client.get("/controls")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<a href="/controls">Controls</a>' in page  # in the nav
    assert "<b>" not in page and "<i>" not in page

    limits = section(page, "Concurrency limits")
    assert f"{ONE_AT_A_TIME}:&lt;i&gt;k&lt;/i&gt;" in limits and ids[0] in limits
    assert ids[1] not in limits and " UTC</small>" in limits  # the slot's expiry
    link = f"/controls/held?key={ONE_AT_A_TIME}%3A%3Ci%3Ek%3C%2Fi%3E"
    assert f'<a href="{link}">1 held</a>' in limits

    locks = section(page, "Unique locks")
    [lock] = api.unique_locks()
    assert html.escape(lock.key) in locks and locked.job_id in locks
    assert re.search(r"<td class=\"nowrap\">(3600\.0|359\d\.\d) s</td>", locks)
    assert f'name="key" value="{html.escape(lock.ident)}"' in locks
    assert 'value="unlock"' in locks and 'name="csrf" value="' in locks

    debounced = section(page, "Debounced jobs")
    assert pending.job_id in debounced and "tests.test_web_controls.SettleJob" in debounced
    assert f"<td>{QUEUE}</td>" in debounced and " UTC</td>" in debounced

    limiters = section(page, "Rate limiters")
    assert "<td>concurrent</td><td><code>pdf-render</code></td><td>2</td><td>-</td>" \
           "<td>1</td><td>0.000 s</td>" in limiters


def test_empty_sections_say_so(client: Client, r: redis.Redis) -> None:
    status, _, page = client.get("/controls")
    assert status == 200
    for text in ("No concurrency limit has a job running or held.", "No unique lock is held.",
                 "No debounced job is pending.", "No rate limiter has state in Redis."):
        assert text in page, text
    status, _, page = client.get("/controls/held?key=nothing")
    assert status == 200 and "No job is held by this key." in page and "0–0 of 0" in page
    assert client.get("/controls/held")[0] == 400


def test_the_held_page_lists_held_jobs_in_order_with_a_pager(client: Client,
                                                             r: redis.Redis) -> None:
    ids = hold([OneAtATimeJob("big", n) for n in range(28)])  # one runs, 27 held
    key = f"{ONE_AT_A_TIME}:big"
    status, _, page = client.get(f"/controls/held?key={key}")
    assert status == 200 and f"Held by <code>{key}</code>" in page
    assert "27 job(s) waiting" in page and "1–25 of 27" in page
    shown = [job_id for job_id in ids if job_id in page]
    assert shown == ids[1:26] and [page.index(i) for i in shown] == sorted(
        page.index(i) for i in shown)
    assert f'<a href="?key={ONE_AT_A_TIME}%3Abig&amp;start=25">later &rarr;</a>' in page
    assert "earlier" not in page
    status, _, page = client.get(f"/controls/held?key={key}&start=25")
    assert [job_id for job_id in ids if job_id in page] == ids[26:]
    assert "26–27 of 27" in page and "start=0\">&larr; earlier</a>" in page
    assert "<code>[&#39;big&#39;, 27]</code>" in page  # the arguments, HTML-escaped


def test_unlock_deletes_the_lock_and_needs_the_csrf_token(client: Client,
                                                         r: redis.Redis) -> None:
    locked = LockedJob.perform_later("acme")
    [lock] = api.unique_locks()
    status, _, _ = client.post("/controls", {"action": "unlock", "key": lock.key},
                               with_csrf=False)
    assert status == 403
    status, _, _ = client.request("POST", "/controls", {"action": "unlock", "key": lock.key,
                                                        "csrf": "forged"})
    assert status == 403 and r.get(keys.unique(lock.key)) == locked.job_id
    assert client.post("/controls", {"action": "lock", "key": lock.key})[0] == 400
    assert r.get(keys.unique(lock.key)) == locked.job_id
    status, headers, _ = client.post("/controls", {"action": "unlock", "key": lock.key})
    assert status == 303 and headers["Location"] == "/controls"
    assert r.get(keys.unique(lock.key)) is None
    assert "No unique lock is held." in client.get("/controls")[2]
    assert LockedJob.perform_later("acme").duplicate_of is None  # accepted again


def test_malformed_entries_and_keys_that_are_not_utf8_are_shown_not_fatal(
        client: Client, r: redis.Redis) -> None:
    client_bytes = get_redis()
    hold([OneAtATimeJob("acme", n) for n in range(2)])
    held_key = keys.concurrency_held(f"{ONE_AT_A_TIME}:acme")
    for bad in (b"\xff\x00 not json", b"[1, 2]",
                b'{"job_id": "j-\\u0007", "message": "nope", "held_at": 1.5}'):
        client_bytes.lpush(held_key, bad)
    client_bytes.set(keys.unique("bad\xff\x01key").encode("latin-1"), b"job\xfe", ex=600)
    client_bytes.rpush(keys.unique("a-list"), b"x")  # not a string: GET fails
    client_bytes.set(keys.debounce("d\xff").encode("latin-1"), b"\xfe not an entry", ex=600)
    client_bytes.hset(keys.debounce("a-hash"), "f", "v")
    # concurrency.states() lists this key by its escaped text, and reads no slots for it
    client_bytes.zadd(keys.concurrency_slots("s\xff").encode("latin-1"),
                      {b"job-s": time.time() + 60})
    client_bytes.hset(keys.limiter("bucket", "broken"), "count", "many")

    locks = {lock.key: lock for lock in api.unique_locks()}
    assert locks["bad\\xff\\x01key"].job_id == "job\\xfe"
    assert locks["a-list"].job_id == "? (not a string: ResponseError)"
    bad_lock = locks["bad\\xff\\x01key"]
    assert bad_lock.raw == b"bad\xff\x01key" and bad_lock.ident == digest(bad_lock.raw)
    debounced = {job.key: job for job in api.debounced()}
    assert debounced["d\\xff"].problem == "not a scheduled-set entry: \\xfe not an entry"
    assert debounced["a-hash"].problem == "? (not a string: ResponseError)"
    held = api.held_jobs(f"{ONE_AT_A_TIME}:acme")
    assert [job.problem for job in held] == [
        None, "not UTF-8 (byte 0)", "not a held job entry", "no readable task message"]
    assert held[3].job_id == "j-\x07" and held[3].held_at == 1.5
    assert held[1].text == "\\xff\\x00 not json"

    status, _, page = client.get("/controls")
    assert status == 200
    for text in ("bad\\xff\\x01key", "job\\xfe", "? (not a string: ResponseError)", "d\\xff",
                 "unreadable: not a scheduled-set entry: \\xfe not an entry",
                 "<code>s\\xff</code>"):
        assert text in page, text
    assert "\x00" not in page and "\x01" not in page and "\x07" not in page
    status, _, page = client.get(f"/controls/held?key={ONE_AT_A_TIME}%3Aacme")
    assert status == 200 and "4 job(s) waiting" in page
    for text in ("unreadable: not UTF-8 (byte 0)", "\\xff\\x00 not json",
                 "unreadable: not a held job entry", "unreadable: no readable task message",
                 "j-\\x07"):
        assert text in page, text
    assert "\x00" not in page and "\x07" not in page
    assert client.get("/controls/held?key=s%FF")[0] == 200

    # Unlock posts the digest of a key that is not UTF-8, and deletes exactly that key.
    status, _, _ = client.post("/controls", {"action": "unlock", "key": bad_lock.ident})
    assert status == 303
    assert client_bytes.get(keys.unique("").encode() + bad_lock.raw) is None
    assert [lock.key for lock in api.unique_locks()] == ["a-list"]
