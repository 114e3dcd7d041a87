"""Live updates in a real headless Chromium: the dashboard's numbers and realtime chart move
while jobs run, with no reload; the reader picks the interval or turns it off; the history
goes from one day to six months."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.jobs import SleepJob, TaskLoggerJob
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, shot, web_url  # noqa: F401  (fixture)
from tests.test_web_layout import PHONE
from tests.test_worker_integration import results

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_the_dashboard_updates_itself_while_jobs_run(r: redis.Redis, web_url: str,  # noqa: F811
                                                     browser: Any) -> None:
    page = browser.new_page()
    page.goto(web_url + "/")
    page.select_option("#live", "2")  # kept in this browser's localStorage
    page.reload()
    assert page.input_value("#live") == "2"
    before = int(page.inner_text("#processed"))
    page.evaluate("window.notReloaded = true")
    for n in range(3):
        TaskLoggerJob.perform_later(n)
    results(r, 3)
    page.wait_for_function(f"Number(document.getElementById('processed').textContent) >= "
                           f"{before + 3}", timeout=30_000)
    assert page.evaluate("window.notReloaded") is True  # the same document: no reload
    # The realtime chart drew the jobs between two updates: a point above its base line.
    page.wait_for_function("document.getElementById('realtime-processed').getAttribute("
                           "'points').split(' ').some(p => Number(p.split(',')[1]) < 110)",
                           timeout=30_000)
    shot(page, "dashboard-live")
    page.select_option("#live", "0")  # off: nothing is fetched any more
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    TaskLoggerJob.perform_later(9)
    results(r, 4)
    page.wait_for_timeout(3_000)  # longer than the 2 s interval that was on; polling, no wait
    assert requests == [] and page.evaluate("localStorage.getItem('jobkit-live')") == "0"


def test_the_history_goes_from_one_day_to_six_months(r: redis.Redis, web_url: str,  # noqa: F811
                                                     browser: Any) -> None:
    page = browser.new_context(**PHONE).new_page()
    page.goto(web_url + "/")
    page.click("text=180 days")
    assert page.inner_text("h2 >> nth=1") == "Last 180 days"
    assert page.locator("svg.chart >> nth=1").locator("rect").count() == 360
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]
    shot(page, "phone-dashboard-180-days")
    page.click("text=1 day")
    assert page.inner_text("h2 >> nth=1") == "Last 1 day"
    page.goto(web_url + "/?days=12345")  # not a choice: the default
    assert page.inner_text("h2 >> nth=1") == "Last 14 days"


def test_the_busy_and_queues_pages_update_themselves(r: redis.Redis, web_url: str,  # noqa: F811
                                                     browser: Any) -> None:
    page = browser.new_page()
    page.goto(web_url + "/busy")
    page.select_option("#live", "2")
    page.evaluate("window.notReloaded = true")
    SleepJob.perform_later("seen live", 3)
    page.wait_for_function("document.getElementById('busy-part').textContent"
                           ".includes('tests.jobs.SleepJob')", timeout=30_000)
    page.wait_for_function("!document.getElementById('busy-part').textContent"
                           ".includes('tests.jobs.SleepJob')", timeout=30_000)  # it ended
    assert page.evaluate("window.notReloaded") is True
    page.goto(web_url + "/queues")
    assert page.input_value("#live") == "2"  # the choice holds on every live page
    page.evaluate("window.notReloaded = true")
    TaskLoggerJob.set(queue="seen-live").perform_later(1)  # a queue no worker consumes
    page.wait_for_function("document.getElementById('queues-part').textContent"
                           ".includes('seen-live')", timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
