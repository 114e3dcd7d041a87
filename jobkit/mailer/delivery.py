"""Delivery methods (smtp, test, file, console, sendmail), interceptors and observers.

Configured by the `mailer:` section of config/jobkit.yml:

    mailer:
      delivery_method: smtp            # smtp | test | file | console | sendmail
      smtp_url: ${SMTP_URL:-smtp://localhost:1025}
      file_dir: tmp/mails              # for `file`
      timeout: 10                      # seconds, for `smtp`

`smtp` sends over connections each process keeps open (jobkit.mailer.smtp, where the SMTP
settings are read: docs/mailers.md lists them).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from jobkit.config import current_settings
from jobkit.errors import ConfigError
from jobkit.mailer.headers import wire_bytes
from jobkit.mailer.message import needs_smtputf8
from jobkit.mailer.sendmail import deliver_sendmail
from jobkit.mailer.smtp import Outgoing, SmtpSettings, send_outgoing, send_smtp

__all__ = [
    "DELIVERY_METHODS",
    "deliver",
    "deliver_outgoing",
    "deliveries",
    "register_interceptor",
    "register_observer",
]

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


def _mailer_settings() -> dict[str, Any]:
    return dict(current_settings().mailer)


def deliver(message: EmailMessage, on_sent: Callable[[], None] | None = None,
            method: str | None = None) -> bool:
    """Deliver through the interceptors, the configured method (or `method`, a mailer's own)
    and the observers; False when an interceptor stopped it. `on_sent` runs as soon as the
    method has handed the message over, before the observers (whose errors are logged, never
    raised: the mail is gone)."""
    for interceptor in _interceptors:
        if interceptor.delivering_email(message) is False:
            return False
    settings = _mailer_settings()
    method = method or str(settings.get("delivery_method", "smtp"))
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


def deliver_outgoing(mail: Outgoing, on_sent: Callable[[], None] | None = None,
                     method: str | None = None) -> bool:
    """Deliver a mail rendered elsewhere (render once: jobkit.mailer.rendered) as `deliver`
    does. Its bytes go to the SMTP server as they are, unless an interceptor, an observer or
    another delivery method needs an EmailMessage: then it is parsed for them."""
    settings = _mailer_settings()
    if _interceptors or _observers or (method or settings.get("delivery_method", "smtp")) \
            != "smtp":
        from jobkit.mailer.rendered import message_of  # rendered builds on this module's peers

        return deliver(message_of(mail), on_sent=on_sent, method=method)
    send_outgoing(mail, SmtpSettings.from_mailer(settings))
    if on_sent is not None:
        on_sent()
    return True


def _deliver_test(message: EmailMessage, settings: dict[str, Any]) -> None:
    deliveries.append(message)


def _deliver_console(message: EmailMessage, settings: dict[str, Any]) -> None:
    sys.stdout.write(wire_bytes(message, keep_bcc=True, utf8=True).decode() + "\n")


def _deliver_file(message: EmailMessage, settings: dict[str, Any]) -> None:
    """One new file per mail, never an existing one: a unique name, written to a temporary
    file and linked into place (os.link fails rather than replace), so a reader never sees
    half a mail. Bcc is kept: the file records the mail, not one recipient's copy."""
    folder = Path(settings.get("file_dir", DEFAULT_FILE_DIR))
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex}.eml"
    temporary = folder / f".{name}.tmp"
    temporary.write_bytes(wire_bytes(message, keep_bcc=True, utf8=needs_smtputf8(message)))
    try:
        os.link(temporary, folder / name)
    finally:
        temporary.unlink()


def _deliver_smtp(message: EmailMessage, settings: dict[str, Any]) -> None:
    send_smtp(message, SmtpSettings.from_mailer(settings))


DELIVERY_METHODS: dict[str, Callable[[EmailMessage, dict[str, Any]], None]] = {  # as config
    "smtp": _deliver_smtp,
    "test": _deliver_test,
    "file": _deliver_file,
    "console": _deliver_console,
    "sendmail": deliver_sendmail,
}
