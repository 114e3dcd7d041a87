"""Accessibility: axe-core (tests/axe, installed by `bin/setup test`) finds no serious or
critical violation on any page of the menu, a queue's page or a dead job's page, in Chromium,
in English and Japanese, light and dark."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.conftest import ROOT
from tests.jobs import FailingJob, TaskLoggerJob
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, web_url  # noqa: F401  (fixture)
from tests.test_web_layout import pages_to_visit
from tests.test_worker_integration import dead_entries

AXE = ROOT / "tests" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert AXE.exists(), "axe-core is missing: `bin/setup test` installs it (npm ci)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def serious_violations(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [f"{v['id']} ({v['impact']}): {v['help']}: "
            + "; ".join(node["html"][:120] for node in v["nodes"][:3])
            for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize(("locale", "scheme"), [("en-US", "light"), ("ja-JP", "dark")])
def test_no_serious_accessibility_violation(r: redis.Redis, web_url: str,  # noqa: F811
                                            browser: Any, locale: str, scheme: str) -> None:
    FailingJob.perform_later("for the dead set")
    TaskLoggerJob.set(wait=3600).perform_later(1)
    dead_entries(r, 1)
    page = browser.new_context(locale=locale, color_scheme=scheme).new_page()
    problems = {}
    for url in pages_to_visit(page, web_url):
        page.goto(url)
        if found := serious_violations(page):
            problems[url.removeprefix(web_url)] = found
    assert not problems, "\n".join(f"{url}:\n  " + "\n  ".join(found)
                                   for url, found in problems.items())
