"""jobkit's web app (WSGI): dashboard, queues, busy workers, the scheduled / retry / dead sets,
`/status.json`, mail previews and the development mail catcher's inbox.

Mount it in any WSGI host (Flask, Django) or serve it with `jobkit web`:

    from jobkit.web import create_app
    app = create_app()                         # or create_app(auth=callable(environ) -> bool)

Outside development it refuses every request unless HTTP basic auth is configured
(JOBKIT_WEB_USERNAME / JOBKIT_WEB_PASSWORD) or an `auth` callable is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from jobkit.config import current_settings
from jobkit.web import dashboard, mail_pages, set_pages, status  # noqa: F401 - routes
from jobkit.web.http import Request, Response, basic_auth_ok
from jobkit.web.routes import router

__all__ = ["create_app"]

Auth = Callable[[dict[str, Any]], bool]


def create_app(auth: Auth | None = None) -> Callable[..., Iterable[bytes]]:
    """The WSGI app; `auth(environ) -> bool` lets the host framework's login decide."""

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        allowed = _allowed(environ, auth)
        if allowed is not True:
            return allowed(start_response)
        return router.dispatch(Request(environ))(start_response)

    return app


def _allowed(environ: dict[str, Any], auth: Auth | None) -> Response | bool:
    if auth is not None:
        return True if auth(environ) else Response("forbidden", "403 Forbidden", "text/plain")
    verdict = basic_auth_ok(environ)
    if verdict is True:
        return True
    if verdict is False:
        return Response("authentication required", "401 Unauthorized", "text/plain",
                        [("WWW-Authenticate", 'Basic realm="jobkit"')])
    if current_settings().environment == "development":
        return True
    return Response("jobkit web refuses to serve without authentication outside development: "
                    "set JOBKIT_WEB_USERNAME and JOBKIT_WEB_PASSWORD", "403 Forbidden",
                    "text/plain")
