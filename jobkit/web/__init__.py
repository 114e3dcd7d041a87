"""jobkit's web app (WSGI): dashboard, queues, busy workers, the scheduled / retry / dead sets,
batches, periodic jobs, controls (unique locks, concurrency limits and held jobs, debounced
jobs, rate limiters), `/status.json`, mail previews and the development mail catcher's inbox.

Mount it in any WSGI host (Flask, Django) or serve it with `jobkit web`:

    from jobkit.web import create_app
    app = create_app()                         # or create_app(auth=callable(environ) -> bool)

Outside development it refuses every request unless HTTP basic auth is configured
(JOBKIT_WEB_USERNAME / JOBKIT_WEB_PASSWORD) or an `auth` callable is given.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Literal

import redis

from jobkit.config import current_settings
from jobkit.errors import ConfigError
from jobkit.masking import mask_secrets
from jobkit.web import (  # noqa: F401 - routes
    batch_pages,
    controls_pages,
    dashboard,
    mail_pages,
    metrics_pages,
    periodic_pages,
    set_pages,
    status,
)
from jobkit.web.http import Request, Response, basic_auth_ok
from jobkit.web.routes import router

__all__ = ["create_app"]

Auth = Callable[[dict[str, Any]], bool]
logger = logging.getLogger(__name__)


def create_app(auth: Auth | None = None) -> Callable[..., Iterable[bytes]]:
    """The WSGI app; `auth(environ) -> bool` lets the host framework's login decide."""

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        allowed: Response | bool = False
        try:
            allowed = _allowed(environ, auth)
            if allowed is not True:
                return allowed(start_response)
            response = router.dispatch(Request(environ))
        except Exception as exc:  # a clear answer, with secrets masked, never a traceback
            response = _error(environ, exc, shown=allowed is True)
        return response(start_response)

    return app


def _error(environ: dict[str, Any], exc: Exception, shown: bool) -> Response:
    """The answer when a page fails: what went wrong (masked), as JSON for /status.json.
    Before the request is authenticated, the details go to the log only."""
    if isinstance(exc, redis.RedisError):
        what, status = f"cannot read Redis: {type(exc).__name__}: {exc}", "503 Service Unavailable"
    elif isinstance(exc, ConfigError):
        what, status = f"jobkit's settings are not valid: {exc}", "500 Internal Server Error"
    else:
        what, status = f"internal error: {type(exc).__name__}: {exc}", "500 Internal Server Error"
        logger.error("jobkit web: %s", mask_secrets("".join(traceback.format_exception(exc))))
    what = mask_secrets(what)
    if not shown:
        logger.error("jobkit web: %s", what)
        what = "jobkit web cannot serve this request: see the server's log"
    if environ.get("PATH_INFO") == "/status.json":
        body = {"status": "stuck", "notice": {"notices": [what]}}
        return Response(json.dumps(body, indent=2), "503 Service Unavailable",
                        "application/json", [("Cache-Control", "no-store")])
    return Response(what, status, "text/plain")


def _allowed(environ: dict[str, Any], auth: Auth | None) -> Response | Literal[True]:
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
