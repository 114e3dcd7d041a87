"""Attacks on issue 18's web parts that found something: each test failed before its fix."""

from __future__ import annotations

import pytest
import redis

from tests.jobs import TaskLoggerJob
from tests.test_web import Client
from tests.test_web_i18n import get, nav_queues


@pytest.mark.parametrize("other", ['consent={"necessary":true}', "flag", "name=a b", "city=Hà Nội"])
def test_the_language_cookie_is_read_after_a_cookie_simplecookie_refuses(
        own_client: redis.Redis, other: str) -> None:
    """A host app's cookie before ours (a JSON value, a bare name, a space, non-ASCII: browsers
    send them all) made SimpleCookie drop every cookie after it: the chosen language was lost."""
    page, _ = get("/queues", cookie=f"{other}; jobkit_lang=ja", accept_language="en")
    assert nav_queues(page) == "キュー"


def test_the_queues_page_confirms_clear_by_the_queue_name(own_client: redis.Redis) -> None:
    """The queues table is live: a row that appears moves the others under the pointer, so the
    confirmation of Clear (every job deleted) names the queue it will clear."""
    TaskLoggerJob.set(queue="reports").perform_later(1)
    _, _, html = Client().get("/queues")
    assert 'data-confirm="Delete every job in queue reports?"' in html
    assert 'data-confirm="Delete every job in queue default?"' in html


@pytest.mark.parametrize("window", ["%C2%B2", "%D9%A3", "x", "99"])  # ², Arabic-Indic 3
def test_an_odd_metrics_window_falls_back_to_the_first(own_client: redis.Redis,
                                                       window: str) -> None:
    """str.isdigit() holds for '²', which int() refuses: the page answered 500."""
    status, _, html = Client().get(f"/metrics/page?window={window}")
    assert status == 200 and '<option value="1" selected>' in html
