"""Just enough WSGI: a request, a response, a router, basic auth. No framework needed."""

from __future__ import annotations

import base64
import hmac
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

__all__ = ["Request", "Response", "Router", "basic_auth_ok", "redirect"]

MAX_FORM_BYTES = 1_000_000


@dataclass
class Request:
    environ: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.environ.get("PATH_INFO", "/") or "/"

    @property
    def method(self) -> str:
        return self.environ.get("REQUEST_METHOD", "GET").upper()

    @property
    def query(self) -> dict[str, str]:
        parsed = parse_qs(self.environ.get("QUERY_STRING", ""))
        return {key: values[-1] for key, values in parsed.items()}

    def form(self) -> dict[str, list[str]]:
        """The url-encoded POST body (at most MAX_FORM_BYTES)."""
        try:
            length = min(int(self.environ.get("CONTENT_LENGTH") or 0), MAX_FORM_BYTES)
        except ValueError:
            length = 0
        body = self.environ["wsgi.input"].read(length) if length else b""
        return parse_qs(body.decode("utf-8", "replace"))

    @property
    def script_name(self) -> str:
        """Where the app is mounted, for links (e.g. /jobs inside a Flask app)."""
        return self.environ.get("SCRIPT_NAME", "").rstrip("/")


@dataclass
class Response:
    body: bytes | str = b""
    status: str = "200 OK"
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, start_response: Callable) -> Iterable[bytes]:
        body = self.body.encode() if isinstance(self.body, str) else self.body
        headers = [("Content-Type", self.content_type), ("Content-Length", str(len(body))),
                   ("X-Content-Type-Options", "nosniff"), *self.headers]
        start_response(self.status, headers)
        return [body]


Handler = Callable[[Request], Response]


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, Handler]] = []

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        # <name> matches one path segment; <name:a|b> only those words.
        compiled = re.compile("^" + re.sub(
            r"<(\w+)(?::([^>]+))?>",
            lambda m: f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})", pattern) + "$")

        def register(handler: Handler) -> Handler:
            self.routes.append((method, compiled, handler))
            return handler

        return register

    def dispatch(self, request: Request) -> Response:
        allowed = False
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            allowed = True
            if method == request.method:
                request.params = match.groupdict()
                return handler(request)
        if allowed:
            return Response("method not allowed", "405 Method Not Allowed", "text/plain")
        return Response("not found", "404 Not Found", "text/plain")


def basic_auth_ok(environ: dict[str, Any]) -> bool | None:
    """True/False when JOBKIT_WEB_USERNAME and JOBKIT_WEB_PASSWORD are set; None when not."""
    username = os.environ.get("JOBKIT_WEB_USERNAME")
    password = os.environ.get("JOBKIT_WEB_PASSWORD")
    if not username or not password:
        return None
    header = environ.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    user, _, secret = given.partition(":")
    return hmac.compare_digest(user.encode(), username.encode()) & hmac.compare_digest(
        secret.encode(), password.encode())


def redirect(location: str) -> Response:
    return Response("", "303 See Other", "text/plain", [("Location", location)])
