"""Render once: the mail `deliver_later` built in the caller travels in the job's payload.

`deliver_later` must build the mail anyway (bad input raises in the caller, nothing is
enqueued); rendering it again on the worker doubled the CPU cost of every mail. So the
MailDeliveryJob payload carries the message's wire bytes and envelope (and its Message-ID, the
job's) next to the mailer, action and arguments (kept for the dashboard, the dead set and a
re-render), and the worker sends those bytes as they are: no parsing, no building, unless an
interceptor, an observer or a delivery method other than smtp needs the message object.
Action Mailer renders on the worker instead; jobkit does so too when:

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

from jobkit.mailer.errors import MailerError
from jobkit.mailer.headers import read_message
from jobkit.mailer.message import envelope, message_id_domain
from jobkit.mailer.smtp import Outgoing, outgoing

__all__ = ["RENDERED_MAX_BYTES", "accepts", "message_id", "message_of", "pack", "unpack"]

RENDERED_MAX_BYTES = 256 * 1024


def accepts(job_class: type, keyword: str = "rendered") -> bool:
    """Whether a delivery job class's perform takes `keyword` ("rendered", "locale"): a
    subclass whose own perform does not gets the arguments only (and renders on the worker,
    in its default locale)."""
    perform = getattr(job_class, "perform", None)
    return perform is not None and keyword in inspect.signature(perform).parameters


def renders_on_worker(mailer_class: type) -> bool:
    """Whether the worker must run the action again (the mailer has deliver callbacks or
    rescue_from handlers)."""
    slots = cast(dict[str, list[str]], getattr(mailer_class, "_callbacks", {}))
    return bool(getattr(mailer_class, "_rescue_handlers", None)) or any(
        names for slot, names in slots.items() if slot.endswith("_deliver"))


def message_id(job_id: str, message: EmailMessage) -> str:
    """The Message-ID of a delivery job's mail: the job's id, so the same on every attempt."""
    return f"<{job_id}@{message_id_domain(message)}>"


def pack(mailer_class: type, message: EmailMessage, job_id: str) -> dict[str, Any] | None:
    """The payload form of `message` with the Message-ID of job `job_id` (set on `message`
    too): its wire bytes ({"ascii": text} or {"base64": text}) and their length ("size": a
    cut payload is refused, not sent as a shorter mail), the envelope ("from", "to",
    "utf8") and "message_id" (for log lines); None when the worker is to render it (see the
    module docstring)."""
    if renders_on_worker(mailer_class):
        return None
    del message["Message-ID"]
    message["Message-ID"] = message_id(job_id, message)
    mail = outgoing(message)
    if len(mail.data) > RENDERED_MAX_BYTES:
        return None
    body = {"ascii": mail.data.decode("ascii")} if mail.data.isascii() else \
        {"base64": base64.b64encode(mail.data).decode("ascii")}
    return {**body, "size": len(mail.data), "from": mail.sender, "to": list(mail.recipients),
            "utf8": mail.utf8, "message_id": mail.message_id}


def unpack(rendered: Any) -> Outgoing:
    """The mail `pack` stored. A payload `pack` did not write (truncated, edited, another
    shape) raises MailerError naming it: the job goes to the dead set, never retried, and
    never sends a guess (a `to` string read as a list would be one RCPT per character)."""
    try:
        if not isinstance(rendered, dict):
            raise TypeError(f"a {type(rendered).__name__}, not a dict")
        payload = cast(dict[str, Any], rendered)
        sender, recipients, utf8 = payload["from"], payload["to"], payload["utf8"]
        if not (isinstance(sender, str) and sender and isinstance(recipients, list)
                and recipients and all(isinstance(r, str) and r for r in recipients)
                and isinstance(utf8, bool)):
            raise TypeError("from/to/utf8 are not an address, a list of them and a bool")
        if isinstance(payload.get("ascii"), str):
            data = payload["ascii"].encode("ascii")
        else:
            data = base64.b64decode(payload["base64"], validate=True)
        if not data:
            raise ValueError("no message bytes")
        size = payload.get("size", len(data))  # absent in payloads queued before it was added
        if size != len(data):
            raise ValueError(f"{len(data)} bytes where {size!r} were written: cut or edited")
        message_id = payload.get("message_id", "")
        if not isinstance(message_id, str):
            raise TypeError("message_id is not a string")
    except (KeyError, TypeError, ValueError) as exc:  # binascii.Error, UnicodeError too
        raise MailerError(f"MailDeliveryJob: the `rendered` payload is malformed ({exc!r}); "
                          "deliver_later wrote {ascii|base64, size, from, to, utf8, "
                          "message_id}") from exc
    return Outgoing(sender, tuple(cast(list[str], recipients)), data, utf8, message_id)


def message_of(mail: Outgoing) -> EmailMessage:
    """`mail` as an EmailMessage (for interceptors, observers and the other delivery
    methods), its Bcc header put back from the envelope."""
    message = read_message(mail.data)
    shown = set(envelope(message)[1])
    hidden = [r for r in mail.recipients if r not in shown]
    if hidden:
        message["Bcc"] = ", ".join(hidden)
    return message
