"""Attacks on issue 18's web parts that found something: each test failed before its fix."""

from __future__ import annotations

import pytest
import redis

from tests.test_web_i18n import get, nav_queues


@pytest.mark.parametrize("other", ['consent={"necessary":true}', "flag", "name=a b", "city=Hà Nội"])
def test_the_language_cookie_is_read_after_a_cookie_simplecookie_refuses(
        own_client: redis.Redis, other: str) -> None:
    """A host app's cookie before ours (a JSON value, a bare name, a space, non-ASCII: browsers
    send them all) made SimpleCookie drop every cookie after it: the chosen language was lost."""
    page, _ = get("/queues", cookie=f"{other}; jobkit_lang=ja", accept_language="en")
    assert nav_queues(page) == "キュー"
