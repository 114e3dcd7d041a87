"""Just enough WSGI: a request, a response, a router, basic auth. No framework needed."""

from __future__ import annotations

import base64
import hmac
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

__all__ = ["Request", "Response", "Router", "basic_auth_ok", "redirect", "url_part"]

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

    @property
    def root(self) -> str:
        """`script_name` URL-encoded, to start every link, form action and redirect."""
        return quote(_wsgi_bytes(self.script_name), safe="/")


@dataclass
class Response:
    body: bytes | str = b""
    status: str = "200 OK"
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, start_response: Callable) -> Iterable[bytes]:
        # backslashreplace: a lone surrogate (from stored JSON) shows as \udc80, never a 500
        body = self.body.encode("utf-8", "backslashreplace") if isinstance(self.body, str) \
            else self.body
        headers = [("Content-Type", self.content_type), ("Content-Length", str(len(body))),
                   ("X-Content-Type-Options", "nosniff"), *self.headers]
        start_response(self.status, headers)
        return [body]


Handler = Callable[[Request], Response]


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, Handler]] = []

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        # <name> matches one path segment; <name:a|b> only those words; <name:.+> the rest of
        # the path, slashes included (the server has already decoded %2F to /).
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
                request.params = {key: _param(value) for key, value in match.groupdict().items()}
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


def _wsgi_bytes(text: str) -> bytes:
    """A WSGI string (PEP 3333: bytes decoded as latin-1) back to its bytes. A host that put
    real Unicode in PATH_INFO (not PEP 3333) gets it encoded as UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _param(value: str) -> str:
    """A path parameter as the name it encodes: the server percent-decoded it into latin-1
    characters; the bytes are UTF-8, and bytes that are not stay as surrogates (Queue and
    friends turn them back into the same bytes)."""
    return _wsgi_bytes(value).decode("utf-8", "surrogateescape")


def url_part(value: object) -> str:
    """`value` (a name, key, id; str, bytes or number) for one URL path segment or query
    value: every reserved character percent-encoded (quote with safe=""). The routes decode
    it back with `_param`."""
    if isinstance(value, bytes):
        return quote(value, safe="")
    return quote(str(value).encode("utf-8", "surrogateescape"), safe="")


def redirect(location: str) -> Response:
    return Response("", "303 See Other", "text/plain", [("Location", location)])
