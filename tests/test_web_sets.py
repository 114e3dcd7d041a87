"""The set pages at scale: filters by class, queue and text with a match count and pages, kept
after an action; select-all; "… all" actions done in chunks with their progress kept in Redis,
each entry acted on exactly once (tests/test_web.py has the pages' basics)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from jobkit import api, keys
from jobkit.job_sets import SCAN_COUNT, DeadSet, JobSet, RetrySet, ScheduledSet
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, shot, web_url  # noqa: F401  (fixture)
from tests.test_web import Client

QUEUE = "sets-test"  # no worker consumes it: what a push sends there stays to be counted
LATER = time.time() + 86_400  # not due: no poller moves them meanwhile


def fill(job_set: JobSet, count: int, info: Any = lambda i: {}) -> None:
    """`count` entries scored LATER + i, job ids j0, j1, ... (`info(i)`: more fields)."""
    client = job_set.client
    for first in range(0, count, 10_000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + 10_000, count)):
                job_set.add(LATER + i, QUEUE, f"m{i}", pipe=pipe,
                            **{"job_id": f"j{i}", "job_class": "app.ReportJob",
                               "queue": QUEUE, **info(i)})
            pipe.execute()


def found(pattern: str, html: str) -> str:
    match = re.search(pattern, html)
    assert match is not None, pattern
    return match.group(1)


def shown_ids(html: str) -> list[str]:
    return re.findall(r'aria-label="select (j\d+)"', html)


@pytest.fixture
def client(r: redis.Redis) -> Client:
    return Client()


def test_filters_count_pages_and_stay_after_an_action(client: Client) -> None:
    fill(RetrySet(), 120, lambda i: {
        "job_class": "app.ReportJob" if i % 2 else "app.MailJob",
        "queue": "q1" if i % 3 else "q2", "error_message": f"failed {i}" + " [50%]*" * (i == 7)})
    _, _, html = client.get("/retries")
    assert "Soonest first" in html and shown_ids(html)[:2] == ["j0", "j1"]
    # class and queue together: i odd and not a multiple of 3, newest first, 25 a page
    wanted = [f"j{i}" for i in reversed(range(120)) if i % 2 and i % 3]
    _, _, html = client.get("/retries?class=app.ReportJob&queue=q1")
    assert "40 of 120 match." in html and "Newest first." in html
    assert shown_ids(html) == wanted[:25]
    assert '<a href="?class=app.ReportJob&amp;queue=q1&amp;start=25">' in html
    _, _, html = client.get("/retries?class=app.ReportJob&queue=q1&start=25")
    assert shown_ids(html) == wanted[25:] and "26–40 of 40" in html
    # the text as typed, glob characters too; a class matches whole
    _, _, html = client.get("/retries?" + urlencode({"q": "[50%]*"}))
    assert "1 of 120 match." in html and shown_ids(html) == ["j7"]
    assert "0 of 120 match." in client.get("/retries?class=app.Report")[2]
    # an action on page 2 of a filter comes back to it
    _, _, html = client.get("/retries?class=app.ReportJob&queue=q1&start=1")
    key = found(r'name="key" value="([^"]+)"', html)
    assert 'action="/retries?class=app.ReportJob&amp;queue=q1&amp;start=1"' in html
    status, headers, _ = client.post("/retries?class=app.ReportJob&queue=q1&start=1",
                                     {"action": "delete", "key": key})
    assert status == 303 and headers["Location"] == "/retries?class=app.ReportJob&queue=q1&start=1"
    assert "39 of 119 match." in client.get(headers["Location"])[2]
    # "all" acts on the matches only; kill all is offered where it makes sense
    status, headers, _ = client.post("/retries?queue=q2", {"action": "all", "then": "kill"})
    assert status == 303 and headers["Location"] == "/retries?queue=q2"
    assert RetrySet().size() == 119 - 40 and DeadSet().size() == 40
    assert {e.queue for e in DeadSet()} == {"q2"} and {e.queue for e in RetrySet()} == {"q1"}
    assert 'value="kill"' not in client.get("/dead")[2]
    assert client.post("/dead", {"action": "all", "then": "kill"})[0] == 400
    assert 'id="select-all"' in html  # the header's checkbox (Chromium test below)


def progress(html: str) -> str:
    return found(r'id="bulk-count"[^>]*>([^<]*)<', html)


def test_retry_all_goes_in_chunks_with_progress_kept_in_redis(client: Client,
                                                              r: redis.Redis) -> None:
    count = 20_000
    fill(ScheduledSet(), count)
    status, headers, _ = client.post("/scheduled", {"action": "all", "then": "push"})
    assert status == 303 and headers["Location"].startswith("/bulk/")
    operation = headers["Location"]
    _, _, html = client.get(operation)
    first = int(progress(html).split()[0].replace(",", ""))
    assert 0 < first < 2 * SCAN_COUNT and progress(html) == f"{first:,} of 20,000"
    assert "Continue" in html  # without script: a button per chunk
    status, headers, _ = client.post(operation, {})
    assert status == 303 and headers["Location"] == operation
    token, states, other_pages = client.csrf(), [], 0
    while not states or not states[-1]["finished"]:
        states.append(json.loads(client.request("POST", operation, {"csrf": token,
                                                                   "json": "1"})[2]))
        other_pages += client.get("/scheduled")[0] == 200  # served between chunks
    assert len(states) > 5 and all(s["done"] - b["done"] < 2 * SCAN_COUNT
                                   for b, s in zip(states, states[1:], strict=False))
    assert states[-1] == {"done": count, "total": count, "refused": 0, "finished": True}
    assert ScheduledSet().size() == 0 and other_pages == len(states)
    messages = r.lrange(QUEUE, 0, -1)
    assert len(messages) == count and len(set(messages)) == count
    _, _, html = Client().get(operation)  # another browser: the same state, from Redis
    assert progress(html) == "20,000 of 20,000" and "Done." in html and "Continue" not in html
    assert r.ttl(keys.set_bulk(operation.rsplit("/", 1)[1])) > 0
    r.hset(keys.set_bulk("odd"), mapping={"set": "dead", "action": "kill"})  # not a record
    assert client.get("/bulk/odd")[0] == client.get("/bulk/none")[0] == 404


def test_an_entry_gone_meanwhile_is_skipped_and_none_is_doubled(client: Client,
                                                               r: redis.Redis) -> None:
    count = 5_000
    fill(RetrySet(), count)
    status, headers, _ = client.post("/retries", {"action": "all", "then": "push"})
    operation = headers["Location"].rsplit("/", 1)[1]
    left = list(RetrySet())
    assert status == 303 and 0 < len(left) < count
    deleted, clicked = left[::7], left[1::7]
    for entry in deleted:  # someone deletes these while the operation goes on
        assert RetrySet().delete(entry)
    for entry in clicked:  # and clicks Retry on these
        assert RetrySet().push_now(entry)
    r.hset(keys.set_bulk(operation), "cursor", 0)  # and the scan starts over (a repeat)
    token = client.csrf()
    while not json.loads(client.request("POST", f"/bulk/{operation}",
                                        {"csrf": token, "json": "1"})[2])["finished"]:
        pass
    messages = r.lrange(QUEUE, 0, -1)
    assert len(messages) == len(set(messages)) == count - len(deleted)
    assert not {json.loads(e.raw)["message"] for e in deleted} & set(messages)
    done = int(r.hget(keys.set_bulk(operation), "done") or -1)
    assert done == count - len(deleted) - len(clicked) and RetrySet().size() == 0


def test_retry_all_of_200000_in_chromium_while_another_page_answers(
        r: redis.Redis, web_url: str, browser: Any) -> None:  # noqa: F811
    count = 200_000
    fill(RetrySet(), count)
    page = browser.new_page()
    page.goto(web_url + "/retries?q=j19999")
    assert "11 of 200,000 match." in page.inner_text("main")  # j19999, j199990 to j199999
    shot(page, "retries-filtered")
    page.goto(web_url + "/retries")
    page.click("#select-all")
    assert page.locator("#bulk input[name=key]:checked").count() == 25
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Retry now all")
    page.wait_for_url("**/bulk/*")
    assert page.locator("#bulk-step").is_hidden()  # the script steps; no button needed
    page.wait_for_function("document.getElementById('bulk-progress').value > 20000")
    shot(page, "retries-retry-all-progress")
    running = page.evaluate("document.getElementById('bulk-progress').value") < count
    answer = browser.new_page().goto(web_url + "/retries")  # while the operation runs
    assert running and answer is not None and answer.ok
    page.wait_for_selector("text=Done.", timeout=120_000)
    assert page.inner_text("#bulk-count") == "200,000 of 200,000"
    assert r.llen(QUEUE) == count and api.RetrySet().size() == 0


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
