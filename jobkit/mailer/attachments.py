"""`self.attachments["report.pdf"] = data` and `self.attachments.inline["logo.png"] = data`."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from email.utils import make_msgid
from typing import Any

from jobkit.config import current_settings
from jobkit.mailer.errors import HeaderInjectionError, InvalidHeaderError
from jobkit.mailer.headers import control_character

__all__ = ["Attachment", "Attachments"]


@dataclass
class Attachment:
    filename: str
    content: bytes
    mime_type: str
    inline: bool = False
    content_id: str = ""
    charset: str | None = None  # "utf-8" for a text/* attachment given as str

    @property
    def url(self) -> str:
        """For inline attachments: the `cid:` URL to put in an <img src>."""
        return f"cid:{self.content_id.strip('<>')}"


def _attachment(filename: str, value: Any, inline: bool) -> Attachment:
    if not isinstance(filename, str) or not filename:
        raise TypeError(f"attachment name {filename!r}: want a non-empty str")
    if "\r" in filename or "\n" in filename:
        raise HeaderInjectionError(f"attachment {filename!r}: the name contains CR or LF")
    bad = control_character(filename)
    if bad is not None:  # it goes in Content-Disposition and Content-Type headers
        raise InvalidHeaderError(f"attachment {filename!r}: the name holds the control "
                                 f"character {bad!r}")
    mime_type = None
    if isinstance(value, dict):
        if "content" not in value:
            raise TypeError(f"attachment {filename!r}: a dict needs \"content\" (and may "
                            "have \"mime_type\")")
        mime_type = value.get("mime_type")
        value = value["content"]
    given_text = isinstance(value, str)
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"attachment {filename!r}: content must be bytes or str")
    mime_type = mime_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    content_id = make_msgid(domain=_content_id_domain()) if inline else ""
    # A str was encoded as UTF-8 just above: say so, or a reader guesses (often wrong).
    charset = "utf-8" if given_text and mime_type.startswith("text/") else None
    return Attachment(filename, bytes(value), mime_type, inline, content_id, charset)


def _content_id_domain() -> str:
    """`mailer.message_id_domain`, else a reserved name (the From domain is not known yet
    when a template asks for the `cid:` URL)."""
    return str(current_settings().mailer.get("message_id_domain") or "jobkit.invalid")


class Attachments(dict):
    """Regular attachments by filename; `.inline` holds the ones the HTML shows by cid."""

    def __init__(self) -> None:
        super().__init__()
        self.inline = _Inline()

    def __setitem__(self, filename: str, value: Any) -> None:
        super().__setitem__(filename, _attachment(filename, value, inline=False))


class _Inline(dict):
    def __setitem__(self, filename: str, value: Any) -> None:
        super().__setitem__(filename, _attachment(filename, value, inline=True))
