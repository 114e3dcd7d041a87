"""The web app in English, Japanese and Vietnamese: every text the templates mark is in each
catalog (with its placeholders and tags), the language follows ?lang=, the cookie, the
browser's Accept-Language and the `web: locale` setting, and a Japanese page renders in
Chromium."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2.ext
import pytest
import redis

import jobkit
from jobkit.errors import ConfigError
from jobkit.web import create_app, i18n
from jobkit.web.routes import _templates
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, shot, web_url  # noqa: F401  (fixture)

TEMPLATES = Path(i18n.__file__).parent / "templates"
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")
TAG = re.compile(r"</?\w+")


def marked() -> dict[str, str]:
    """Every text the templates mark for translation (a plural by its singular) -> where.
    A call on a variable (the set pages' `_(title)`) names texts marked elsewhere."""
    found = {}
    for path in sorted(TEMPLATES.glob("*.html")):
        for _, _, message in jinja2.ext.extract_from_ast(_templates.parse(path.read_text())):
            text = message if isinstance(message, str) or message is None else message[0]
            if text is not None:
                found.setdefault(text, path.name)
    return found


@pytest.mark.parametrize("language", ["ja", "vi"])
def test_every_marked_text_is_translated(language: str) -> None:
    catalog, texts = i18n.catalog(language), marked()
    assert len(texts) > 100
    missing = {text: where for text, where in texts.items() if not catalog.get(text)}
    assert not missing, f"{language}.json lacks: {missing}"
    stale = sorted(set(catalog) - set(texts))
    assert not stale, f"{language}.json has texts no template marks: {stale}"
    for text, translation in catalog.items():
        for form in translation if isinstance(translation, list) else [translation]:
            assert sorted(PLACEHOLDER.findall(form)) == sorted(PLACEHOLDER.findall(text)), form
            assert sorted(TAG.findall(form)) == sorted(TAG.findall(text)), form


def get(path: str, **headers: str) -> tuple[str, list[tuple[str, str]]]:
    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
               "wsgi.input": io.BytesIO(), "SERVER_NAME": "test", "SERVER_PORT": "80",
               **{f"HTTP_{name.upper()}": value for name, value in headers.items()}}
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=response_headers)

    body = b"".join(create_app()(environ, start_response)).decode()
    assert answer["status"] == "200 OK", body[:300]
    return body, answer["headers"]


def nav_queues(page: str) -> str:
    return re.search(r'/queues">([^<]+)</a>', page).group(1)  # type: ignore[union-attr]


def test_the_language_follows_query_cookie_browser_and_setting(r: redis.Redis) -> None:
    page, _ = get("/")
    assert '<html lang="en">' in page and nav_queues(page) == "Queues"
    page, _ = get("/", accept_language="fr-FR, ja;q=0.8, vi;q=0.5")
    assert '<html lang="ja">' in page and nav_queues(page) == "キュー"
    assert "過去 14 日" in page  # a plural, with its number
    page, headers = get("/periodic?lang=vi&start=0", accept_language="ja")
    assert '<html lang="vi">' in page and nav_queues(page) == "Hàng đợi"
    assert [value for name, value in headers if value.startswith("jobkit_lang=")] == [
        "jobkit_lang=vi; Path=/; SameSite=Lax; Max-Age=31536000"]
    assert 'href="?lang=ja&amp;start=0"' in page  # switching keeps the other parameters
    page, _ = get("/queues", cookie="jobkit_lang=vi", accept_language="ja")
    assert nav_queues(page) == "Hàng đợi"
    page, _ = get("/queues", cookie="jobkit_lang=xx", accept_language="tlh")
    assert nav_queues(page) == "Queues"
    jobkit.configure(web={"locale": "ja"})
    try:
        page, _ = get("/queues", accept_language="de")
        assert nav_queues(page) == "キュー"
        page, _ = get("/queues?lang=en")
        assert nav_queues(page) == "Queues"
    finally:
        jobkit.configure()


def test_an_unknown_locale_setting_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"web\.locale.*one of en, ja, vi"):
        jobkit.configure(web={"locale": "fr"})
    jobkit.configure()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.mark.usefixtures("worker")
def test_a_japanese_browser_gets_japanese_pages(r: redis.Redis, web_url: str,  # noqa: F811
                                                browser: Any) -> None:
    page = browser.new_context(locale="ja-JP").new_page()
    page.goto(web_url + "/")
    assert page.evaluate("document.documentElement.lang") == "ja"
    assert page.inner_text("h1") == "ダッシュボード"
    assert "キュー" in page.inner_text("nav")
    shot(page, "dashboard-ja")
    page.click("text=Tiếng Việt")  # the switcher: the choice is kept for the next pages
    assert page.inner_text("h1") == "Bảng điều khiển"
    page.click("nav >> text=Hàng đợi")
    assert page.evaluate("document.documentElement.lang") == "vi"
