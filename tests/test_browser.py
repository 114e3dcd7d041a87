"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright):
open the pages, retry a dead job with a click, see it leave the dead set. Screenshots of
each page go to artifacts/screenshots/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobkit.job_sets import DeadSet
from jobkit.testing_services import free_port, stop_process, wait_until
from tests.conftest import ROOT, wait_for
from tests.jobs import FailingJob, TaskLoggerJob
from tests.test_worker_integration import dead_entries, results

SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def web_url(redis_server: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "web.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("jobkit")), "web", "--port",
                             str(port)], cwd=ROOT, env={**os.environ, "REDIS_URL": redis_server},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), what="jobkit web")
        yield url
    finally:
        stop_process(proc)
        log.close()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/status.json", timeout=2):
            return True
    except OSError as exc:
        return getattr(exc, "code", None) == 503


@pytest.fixture
def browser_page() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it (apt)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        yield page
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_retry_a_dead_job_with_a_click(r: redis.Redis, web_url: str, browser_page) -> None:
    page = browser_page
    TaskLoggerJob.perform_later(1)
    TaskLoggerJob.set(wait=3600).perform_later(2)
    results(r, 1)
    job = FailingJob.perform_later("clicked")
    [dead] = dead_entries(r, 1)

    page.goto(web_url + "/")
    assert page.locator("#dead-count").inner_text() == "1"
    shot(page, "dashboard")
    for name in ("queues", "busy", "scheduled", "retries", "periodic", "mail/previews",
                 "mail/previews/UserMailer.welcome", "mail/inbox"):
        page.goto(f"{web_url}/{name}")
        assert page.title()
        shot(page, name.replace("/", "-"))

    page.goto(web_url + "/dead")
    assert job.job_id in page.content()
    shot(page, "dead")

    page.locator("td a").first.click()  # the entry's detail page
    assert "failing on purpose: clicked" in page.content()
    shot(page, "dead-detail")
    page.get_by_role("button", name="Retry").click()
    page.wait_for_url(web_url + "/dead")
    wait_for(lambda: DeadSet().size() == 1 and DeadSet().page()[0].key != dead.key,
             what="the clicked job to leave the dead set (and fail once more)")
    page.reload()
    assert page.locator("tr td input[name=key]").count() == 1


def test_unlock_a_unique_lock_and_see_held_jobs_on_the_controls_page(
        r: redis.Redis, web_url: str, browser_page) -> None:
    from jobkit import keys
    from jobkit.controls import concurrency
    from tests.test_control_options import Import, Sync

    first = Sync.perform_later("acme")
    assert not Sync.perform_later("acme").successfully_enqueued
    for n in range(3):  # held as a worker would hold them: the key's limit is 2
        Import.perform_later("acme", n)
        message = r.rpop("controls")
        r.hset("jobkit:unacked:browser", f"t{n}", "[]")
        concurrency.admit(r, {"key": "tests.test_control_options.Import:acme", "to": 2,
                              "duration": 60}, f"j{n}", f"t{n}", "controls", message,
                          "jobkit:unacked:browser", "jobkit:unacked_index:browser")
    page = browser_page
    page.goto(web_url + "/controls")
    assert first.job_id in page.content()
    shot(page, "controls")
    page.get_by_role("link", name="1").click()  # the held count links to the held jobs
    assert "j2" in page.content()
    shot(page, "controls-held")
    page.goto(web_url + "/controls")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Unlock").click()
    page.wait_for_url(web_url + "/controls")
    wait_for(lambda: not r.keys(keys.unique("*")), what="the lock to be deleted")
    assert Sync.perform_later("acme").successfully_enqueued
