"""Render once: the mail `deliver_later` built in the caller travels in the job's payload.

`deliver_later` must build the mail anyway (bad input raises in the caller, nothing is
enqueued); rendering it again on the worker doubled the CPU cost of every mail. So the
MailDeliveryJob payload carries the built message's bytes next to the mailer, action and
arguments (kept for the dashboard, the dead set and a re-render), and the worker sends those
bytes. Action Mailer renders on the worker instead; jobkit does so too when:

* the mailer has deliver callbacks (before/after/around_deliver) or rescue_from handlers:
  they run on the instance the action filled in, so the worker runs the action again to have
  it;
* the message is larger than RENDERED_MAX_BYTES (big attachments): a Redis payload that size
  costs more to move through every queue than rendering costs.

The trade-off: a mail is sent as it was when enqueued (a template or record changed between
enqueue and delivery is not seen), as Sidekiq's "send the arguments, not the object" advice
would have it the other way round; the arguments stay in the payload for that reason.
"""

from __future__ import annotations

import base64
import inspect
from email.message import EmailMessage
from typing import Any, cast

from jobkit.mailer.headers import read_message, wire_bytes

__all__ = ["RENDERED_MAX_BYTES", "accepts", "pack", "unpack"]

RENDERED_MAX_BYTES = 256 * 1024


def accepts(job_class: type) -> bool:
    """Whether a delivery job class takes `rendered` (a subclass whose own perform does not
    gets the arguments only, and renders on the worker)."""
    perform = getattr(job_class, "perform", None)
    return perform is not None and "rendered" in inspect.signature(perform).parameters


def renders_on_worker(mailer_class: type) -> bool:
    """Whether the worker must run the action again (the mailer has deliver callbacks or
    rescue_from handlers)."""
    slots = cast(dict[str, list[str]], getattr(mailer_class, "_callbacks", {}))
    return bool(getattr(mailer_class, "_rescue_handlers", None)) or any(
        names for slot, names in slots.items() if slot.endswith("_deliver"))


def pack(mailer_class: type, message: EmailMessage) -> dict[str, str] | None:
    """The payload form of `message` ({"ascii": text} or {"base64": text}), or None when the
    worker is to render it (see the module docstring)."""
    if renders_on_worker(mailer_class):
        return None
    data = wire_bytes(message, keep_bcc=True, utf8=True)  # Bcc: the worker needs the envelope
    if len(data) > RENDERED_MAX_BYTES:
        return None
    if data.isascii():
        return {"ascii": data.decode("ascii")}
    return {"base64": base64.b64encode(data).decode("ascii")}


def unpack(rendered: dict[str, Any]) -> EmailMessage:
    """The message `pack` stored."""
    if "ascii" in rendered:
        data = str(rendered["ascii"]).encode("ascii")
    else:
        data = base64.b64decode(str(rendered["base64"]), validate=True)
    return read_message(data)
