"""CSRF protection by double submit: a random cookie that every POST form must repeat.

The cookie is SameSite=Strict and HttpOnly, so another site can neither send it along with a
forged POST nor read it to put in a form.
"""

from __future__ import annotations

import hmac
import secrets
from http.cookies import SimpleCookie

from jobkit.web.http import Request

__all__ = ["COOKIE", "csrf_ok", "csrf_token"]

COOKIE = "jobkit_csrf"


def _cookie_value(request: Request) -> str | None:
    jar = SimpleCookie(request.environ.get("HTTP_COOKIE", ""))
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


def csrf_token(request: Request) -> tuple[str, str | None]:
    """(token for forms, Set-Cookie header value when a new cookie is needed)."""
    existing = _cookie_value(request)
    if existing:
        return existing, None
    token = secrets.token_urlsafe(32)
    path = request.root or "/"
    return token, f"{COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict"


def csrf_ok(request: Request, form: dict[str, list[str]]) -> bool:
    cookie = _cookie_value(request)
    given = (form.get("csrf") or [""])[-1]
    return bool(cookie) and hmac.compare_digest(cookie.encode(), given.encode())
