"""The web app's languages: English (the templates' own text), Japanese and Vietnamese.

Templates mark their text with `_()` / `ngettext()` (jinja2's i18n extension, new style:
``{{ _("Last %(n)s days", n=7) }}``). The catalogs are JSON files in `locales/`, English text
to translation: read as they are, with no compile step (gettext's .mo files would need one at
packaging time), and checked complete by tests/test_web_i18n.py.

The language of a request: `?lang=` (remembered in a cookie), else the cookie, else the
browser's Accept-Language, else the `web: locale` setting (default English).
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from urllib.parse import urlencode

import jinja2

from jobkit.config import WEB_LOCALES, current_settings
from jobkit.web.http import Request

__all__ = ["COOKIE", "LANGUAGES", "catalog", "choose", "install", "links", "use"]

_NAMES = {"en": "English", "ja": "日本語", "vi": "Tiếng Việt"}
#: Code -> the language's own name, for the switcher.
LANGUAGES = {code: _NAMES[code] for code in WEB_LOCALES}
COOKIE = "jobkit_lang"
DEFAULT = "en"
_LOCALES = Path(__file__).parent / "locales"
_current: ContextVar[str] = ContextVar("jobkit_web_language", default=DEFAULT)


@cache
def catalog(language: str) -> dict[str, str | list[str]]:
    """English text -> translation; a plural's value is [singular, plural]."""
    if language == DEFAULT:
        return {}
    return json.loads((_LOCALES / f"{language}.json").read_text(encoding="utf-8"))


def gettext(message: str) -> str:
    found = catalog(_current.get()).get(message)
    return found if isinstance(found, str) and found else message


def ngettext(singular: str, plural: str, n: int) -> str:
    found = catalog(_current.get()).get(singular)
    if isinstance(found, list) and len(found) == 2:
        singular, plural = found  # Japanese and Vietnamese use one form: both the same
    return singular if n == 1 else plural


def install(environment: jinja2.Environment) -> None:
    environment.add_extension("jinja2.ext.i18n")
    environment.install_gettext_callables(  # pyright: ignore[reportAttributeAccessIssue]
        gettext, ngettext, newstyle=True)


def use(language: str) -> None:
    """Render this request's pages in `language` (the context is the request's)."""
    _current.set(language)


def choose(request: Request) -> tuple[str, str | None]:
    """(the request's language, a Set-Cookie value when `?lang=` chose a new one)."""
    asked = request.query.get("lang", "")
    if asked in LANGUAGES:
        path = request.root or "/"
        return asked, f"{COOKIE}={asked}; Path={path}; SameSite=Lax; Max-Age=31536000"
    remembered = _cookie(request.environ.get("HTTP_COOKIE", ""))
    if remembered in LANGUAGES:
        return remembered, None
    return _accepted(request.environ.get("HTTP_ACCEPT_LANGUAGE", "")) or _configured(), None


def links(request: Request) -> dict[str, str]:
    """Language code -> this page's URL in it (its other query parameters kept)."""
    return {code: "?" + urlencode({**request.query, "lang": code}) for code in LANGUAGES}


def _cookie(header: str) -> str | None:
    """Our cookie's value, read by hand: SimpleCookie drops every cookie after one it finds
    invalid, and browsers send a host app's JSON values, bare names and spaces as they are."""
    for part in header.split(";"):
        name, equals, value = part.strip().partition("=")
        if equals and name == COOKIE:
            return value.strip().strip('"')
    return None


def _accepted(header: str) -> str | None:
    """The best of our languages in an Accept-Language header (q-values honoured)."""
    ranked = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else None


def _configured() -> str:
    return current_settings().web.get("locale", DEFAULT)
