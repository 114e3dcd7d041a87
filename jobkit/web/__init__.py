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
import os
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobkit.config import current_settings
from jobkit.errors import ConfigError
from jobkit.masking import mask_secrets, mask_url
from jobkit.redis_client import client_for, scoped_redis
from jobkit.web import (  # noqa: F401 - routes
    batch_pages,
    bulk_pages,
    controls_pages,
    dashboard,
    mail_pages,
    metrics_pages,
    periodic_pages,
    set_pages,
    status,
)
from jobkit.web.http import Request, Response, basic_auth_ok
from jobkit.web.routes import page, router
from jobkit.web.status import STUCK, stuck_word

__all__ = ["REDIS_TIMEOUT_SECONDS", "create_app"]

Auth = Callable[[dict[str, Any]], bool]
logger = logging.getLogger(__name__)

#: Seconds the web app waits to connect to Redis and for each reply: with Redis gone or frozen
#: a page answers 503 instead of hanging.
REDIS_TIMEOUT_SECONDS = 5.0
_clients: dict[tuple[int, str, str | None], redis.Redis] = {}


def create_app(auth: Auth | None = None) -> Callable[..., Iterable[bytes]]:
    """The WSGI app; `auth(environ) -> bool` lets the host framework's login decide."""

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        allowed: Response | bool = False
        try:
            allowed = _allowed(environ, auth)
            if allowed is not True:
                return allowed(start_response)
            with scoped_redis(web_redis()):
                response = router.dispatch(Request(environ))
        except Exception as exc:  # a clear answer, with secrets masked, never a traceback
            response = _error(environ, exc, shown=allowed is True)
        return response(start_response)

    return app


def web_redis() -> redis.Redis:
    """The web app's client (one per process and URL): timeouts bounded by
    REDIS_TIMEOUT_SECONDS, and one retry, on a dropped connection only. redis-py's default
    retries a timeout ten times: a minute per command on a frozen Redis."""
    settings = current_settings()
    key = (os.getpid(), settings.redis_url, settings.sentinel_master)
    client = _clients.get(key)
    if client is None:
        client = client_for(settings.redis_url, settings.sentinel_master, REDIS_TIMEOUT_SECONDS)
        client.set_retry(Retry(NoBackoff(), 1, (redis.ConnectionError,)))
        _clients[key] = client
    return client


def _error(environ: dict[str, Any], exc: Exception, shown: bool) -> Response:
    """The answer when a page fails: what went wrong (masked), as JSON for /status.json and as
    a page otherwise; Redis failing is a 503 that names Redis, its (masked) URL and the error.
    Before the request is authenticated, the details go to the log only."""
    failure = mask_secrets(f"{type(exc).__name__}: {exc}")
    redis_url = None
    if isinstance(exc, redis.RedisError):
        redis_url = mask_url(current_settings().redis_url)
        what, status = f"cannot use Redis at {redis_url}: {failure}", "503 Service Unavailable"
    elif isinstance(exc, ConfigError):
        what, status = f"jobkit's settings are not valid: {exc}", "500 Internal Server Error"
    else:
        what, status = f"internal error: {failure}", "500 Internal Server Error"
        logger.error("jobkit web: %s", mask_secrets("".join(traceback.format_exception(exc))))
    what = mask_secrets(what)
    if not shown:
        logger.error("jobkit web: %s", what)
        what, redis_url = "jobkit web cannot serve this request: see the server's log", None
    elif redis_url:
        logger.warning("jobkit web: %s", what)
    if environ.get("PATH_INFO") == "/status.json":
        try:
            word = stuck_word()
        except ConfigError:  # the settings are what failed: the default spelling
            word = STUCK
        body: dict[str, Any] = {"status": word, "notice": {"notices": [what]}}
        if redis_url:
            body["redis"] = {"url": redis_url, "error": failure}
        return Response(json.dumps(body, indent=2), "503 Service Unavailable",
                        "application/json", [("Cache-Control", "no-store")])
    if not shown:
        return Response(what, status, "text/plain")
    return _error_page(Request(environ), what, status, redis_url)


def _error_page(request: Request, what: str, http_status: str, redis_url: str | None) -> Response:
    """The failure as an HTML page in the app's layout; as text when even that cannot be
    rendered (the settings themselves are what failed)."""
    try:
        response = page(request, "unavailable.html", what=what, redis_url=redis_url)
    except Exception:  # the first failure is the one to show
        return Response(what, http_status, "text/plain")
    response.status = http_status
    return response


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
