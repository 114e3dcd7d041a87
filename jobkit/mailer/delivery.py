"""Delivery methods (smtp, test, file, console), interceptors and observers.

Configured by the `mailer:` section of config/jobkit.yml:

    mailer:
      delivery_method: smtp            # smtp | test | file | console
      smtp_url: ${SMTP_URL:-smtp://localhost:1025}
      file_dir: tmp/mails              # for `file`
      timeout: 10                      # seconds, for `smtp`

`smtp_url`: ``smtp://user:password@host:port`` (STARTTLS when the server offers it),
``smtp+starttls://...`` (STARTTLS required) or ``smtps://...`` (implicit TLS). The
``SMTP_URL`` environment variable wins over the file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import aiosmtplib

from jobkit.config import current_settings
from jobkit.config_values import SMTP_URL_FORMS, valid_smtp_url
from jobkit.errors import ConfigError
from jobkit.mailer.errors import PermanentDeliveryError, TransientDeliveryError
from jobkit.masking import mask_url

__all__ = [
    "DELIVERY_METHODS",
    "SmtpSettings",
    "deliver",
    "deliveries",
    "register_interceptor",
    "register_observer",
]

DEFAULT_SMTP_URL = "smtp://localhost:25"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_FILE_DIR = "tmp/mails"

logger = logging.getLogger(__name__)

#: The `test` delivery method's outbox (Action Mailer's `ActionMailer::Base.deliveries`).
deliveries: list[EmailMessage] = []


_interceptors: list[Any] = []
_observers: list[Any] = []


def register_interceptor(interceptor: Any) -> Any:
    """`interceptor.delivering_email(message)` runs before each delivery; it may change the
    message, or return False to stop it."""
    _interceptors.append(interceptor)
    return interceptor


def register_observer(observer: Any) -> Any:
    """`observer.delivered_email(message)` runs after each successful delivery."""
    _observers.append(observer)
    return observer


@dataclass(frozen=True)
class SmtpSettings:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None
    timeout: float

    @classmethod
    def from_url(cls, url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> SmtpSettings:
        if not valid_smtp_url(url):  # the rule settings are loaded with (SMTP_URL may change)
            raise ConfigError(f"smtp_url {mask_url(url)!r}: want {SMTP_URL_FORMS}")
        parts = urlsplit(url)
        tls = {"smtp": (False, None), "smtp+starttls": (False, True), "smtps": (True, False)}
        use_tls, start_tls = tls[parts.scheme]
        host = cast(str, parts.hostname)  # valid_smtp_url checked there is one
        return cls(host, parts.port or (465 if use_tls else 25),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None,
                   use_tls, start_tls, timeout)


def _mailer_settings() -> dict[str, Any]:
    return dict(current_settings().mailer)


def deliver(message: EmailMessage, on_sent: Callable[[], None] | None = None) -> bool:
    """Deliver through the interceptors, the configured method and the observers; False when
    an interceptor stopped it. `on_sent` runs as soon as the method has handed the message
    over, before the observers (whose errors are logged, never raised: the mail is gone)."""
    for interceptor in _interceptors:
        if interceptor.delivering_email(message) is False:
            return False
    settings = _mailer_settings()
    method = settings.get("delivery_method", "smtp")
    sender = DELIVERY_METHODS.get(method)
    if sender is None:
        raise ConfigError(f"mailer.delivery_method {method!r}: choose one of "
                          f"{', '.join(DELIVERY_METHODS)}")
    sender(message, settings)
    if on_sent is not None:
        on_sent()
    for observer in _observers:
        try:
            observer.delivered_email(message)
        except Exception:
            logger.exception("mail observer %r failed", observer)
    return True


def _deliver_test(message: EmailMessage, settings: dict[str, Any]) -> None:
    deliveries.append(message)


def _deliver_console(message: EmailMessage, settings: dict[str, Any]) -> None:
    sys.stdout.write(message.as_string() + "\n")


def _deliver_file(message: EmailMessage, settings: dict[str, Any]) -> None:
    folder = Path(settings.get("file_dir", DEFAULT_FILE_DIR))
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{id(message):x}.eml"
    (folder / name).write_bytes(message.as_bytes())


def _deliver_smtp(message: EmailMessage, settings: dict[str, Any]) -> None:
    url = os.environ.get("SMTP_URL") or settings.get("smtp_url", DEFAULT_SMTP_URL)
    smtp = SmtpSettings.from_url(url, float(settings.get("timeout", DEFAULT_TIMEOUT_SECONDS)))
    try:
        refused, _reply = _run(aiosmtplib.send(
            message, hostname=smtp.hostname, port=smtp.port, username=smtp.username,
            password=smtp.password, use_tls=smtp.use_tls, start_tls=smtp.start_tls,
            timeout=smtp.timeout))
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        error = PermanentDeliveryError if all(500 <= c < 600 for c in codes) else \
            TransientDeliveryError
        replies = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        raise error(f"SMTP refused recipients: {replies}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        error = PermanentDeliveryError if 500 <= exc.code < 600 else TransientDeliveryError
        raise error(f"SMTP {exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise TransientDeliveryError(f"SMTP {smtp.hostname}:{smtp.port}: {exc}") from exc
    if refused:  # the others got it: raising would resend to them, so say it loudly instead
        logger.warning("SMTP accepted %s but refused %s", message["Message-ID"],
                       "; ".join(f"{rcpt}: {reply}" for rcpt, reply in refused.items()))


def _run(coroutine: Any) -> Any:
    """Run a coroutine to completion, also from code already inside an event loop (e.g. a
    FastAPI handler calling deliver_now): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


DELIVERY_METHODS: dict[str, Callable[[EmailMessage, dict[str, Any]], None]] = {  # as config
    "smtp": _deliver_smtp,
    "test": _deliver_test,
    "file": _deliver_file,
    "console": _deliver_console,
}
