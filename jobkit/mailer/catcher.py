"""A local SMTP server for development that keeps what it receives (`jobkit mailcatcher`).

Mail is kept in Redis (the newest CATCHER_KEEP messages) so the web process can show the
inbox without sharing a disk with the catcher.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import time
from email.message import EmailMessage
from typing import Any, cast

import redis
from aiosmtpd.controller import Controller

from jobkit import keys
from jobkit.redis_client import get_redis

__all__ = ["CaughtMail", "Inbox", "start_catcher"]

CATCHER_KEEP = 500


class CaughtMail(dict):
    """{"received_at", "mail_from", "rcpt_tos", "raw"} as kept in Redis; "raw" is the
    message's bytes in base64, kept whole (whatever charset it claims) for the inbox."""

    @property
    def raw(self) -> bytes:
        if "raw" not in self:  # kept by an older catcher: text, decoded with replacement
            return str(self["data"]).encode()
        return base64.b64decode(self["raw"])

    def message(self) -> EmailMessage:
        return cast(EmailMessage, email.message_from_bytes(self.raw,
                                                           policy=email.policy.default))


class Inbox:
    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or get_redis()

    def add(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> None:
        entry = {"received_at": time.time(), "mail_from": mail_from, "rcpt_tos": rcpt_tos,
                 "raw": base64.b64encode(data).decode("ascii")}
        with self.client.pipeline() as pipe:
            pipe.lpush(keys.MAIL_CATCHER, json.dumps(entry))
            pipe.ltrim(keys.MAIL_CATCHER, 0, CATCHER_KEEP - 1)
            pipe.execute()

    def messages(self, start: int = 0, count: int = 50) -> list[CaughtMail]:
        """Newest first."""
        raw = self.client.lrange(keys.MAIL_CATCHER, start, start + count - 1)
        return [CaughtMail(json.loads(item)) for item in raw]

    def get(self, index: int) -> CaughtMail | None:
        raw = self.client.lindex(keys.MAIL_CATCHER, index)
        return CaughtMail(json.loads(raw)) if raw is not None else None

    def clear(self) -> None:
        self.client.delete(keys.MAIL_CATCHER)


class _Handler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.inbox.add(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        return "250 Message accepted for delivery"


def start_catcher(host: str = "127.0.0.1", port: int = 1025,
                  inbox: Inbox | None = None) -> Controller:
    """Start the catcher on a thread; `.stop()` the returned controller to end it."""
    # SMTPUTF8 on: a catcher takes what a real server might (non-ASCII addresses too)
    controller = Controller(_Handler(inbox or Inbox()), hostname=host, port=port,
                            enable_SMTPUTF8=True)
    controller.start()
    return controller
