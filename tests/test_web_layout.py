"""The dashboard on a phone and in a dark room, in a real headless Chromium: at 390 px (an
iPhone's width, as a mobile browser lays it out) no page scrolls sideways, and the colours
follow the system's dark preference. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.jobs import FailingJob, TaskLoggerJob
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, shot, web_url  # noqa: F401  (fixture)
from tests.test_worker_integration import dead_entries

pytestmark = pytest.mark.usefixtures("worker")

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}
LONG = "an-unbroken-argument-" * 20  # a value wider than a phone, with no space to wrap at


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def pages_to_visit(page: Any, web_url: str) -> list[str]:  # noqa: F811  (the fixture's name)
    """Every page the nav links to (so pages added later are checked too), a queue's page
    and a dead job's page."""
    page.goto(web_url + "/")
    links = page.eval_on_selector_all("nav > a", "links => links.map(a => a.href)")
    entry = page.goto(web_url + "/dead") and page.eval_on_selector(
        "main a[href*='/dead/']", "a => a.href")
    return [*(link for link in links if not link.endswith(".json")),
            web_url + "/queues/default", entry]


def test_no_page_scrolls_sideways_on_a_phone(r: redis.Redis, web_url: str,  # noqa: F811
                                             browser: Any) -> None:
    FailingJob.perform_later(LONG)
    TaskLoggerJob.set(wait=3600).perform_later(LONG)
    TaskLoggerJob.set(queue="nobody-consumes-this-queue-with-a-long-name").perform_later(1)
    dead_entries(r, 1)
    page = browser.new_context(**PHONE).new_page()
    urls = pages_to_visit(page, web_url)
    assert len(urls) >= 12, urls
    wide = {}
    for url in urls:
        page.goto(url)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["viewport"]["width"]:
            wide[url] = width
    shot(page, "phone-dead-entry")
    page.goto(web_url + "/")
    shot(page, "phone-dashboard")
    assert not wide, f"pages wider than 390 px (they scroll sideways): {wide}"


@pytest.mark.parametrize(("scheme", "background"),
                         [("dark", "rgb(17, 24, 39)"), ("light", "rgb(255, 255, 255)")])
def test_colours_follow_the_system_preference(r: redis.Redis, web_url: str,  # noqa: F811
                                              browser: Any, scheme: str, background: str
                                              ) -> None:
    page = browser.new_context(color_scheme=scheme).new_page()
    page.goto(web_url + "/")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == background
    text = page.evaluate("getComputedStyle(document.body).color")
    assert text != background
    shot(page, f"dashboard-{scheme}")
