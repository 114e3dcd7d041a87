"""Mail previews (Rails' `ActionMailer::Preview`): see a mail without sending it.

    # mailers/previews/user_mailer_preview.py
    class UserMailerPreview(Preview):
        def welcome(self):
            return UserMailer.welcome(sample_user())

Each public method returns a MessageDelivery (or an EmailMessage) built from sample data;
`self.params` holds the parameters the preview was asked with (the page's query string,
`jobkit mail preview --param key=value`), as strings.
Previews are found in the modules named by the `previews` list of the `mailer:` settings
(default: ``mailers.previews``, a package whose modules are all imported).
"""

from __future__ import annotations

import base64
import importlib
import pkgutil
import re
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any, ClassVar

from jobkit.config import current_settings
from jobkit.mailer.errors import MailerError

__all__ = ["Preview", "all_previews", "find_preview", "inline_images", "render_preview"]

DEFAULT_PREVIEW_MODULES = ("mailers.previews",)


class Preview:
    """Subclass as `<Mailer>Preview`; every public method is one preview."""

    registry: ClassVar[dict[str, type[Preview]]] = {}

    def __init__(self, params: Mapping[str, str] | None = None) -> None:
        self.params: dict[str, str] = dict(params or {})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Preview.registry[cls.preview_name()] = cls

    @classmethod
    def preview_name(cls) -> str:
        """UserMailerPreview -> UserMailer."""
        return cls.__name__.removesuffix("Preview")

    @classmethod
    def emails(cls) -> list[str]:
        return sorted(name for name, attr in vars(cls).items()
                      if callable(attr) and not name.startswith("_"))


def _load(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # no previews package in this app
            raise
        for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
            importlib.import_module(f"{name}.{info.name}")


def all_previews() -> dict[str, type[Preview]]:
    modules = tuple(current_settings().mailer.get("previews", DEFAULT_PREVIEW_MODULES))
    _load(modules)
    return dict(sorted(Preview.registry.items()))


def find_preview(spec: str) -> tuple[type[Preview], str]:
    """"UserMailer.welcome" -> (UserMailerPreview, "welcome"); MailerError when unknown."""
    mailer, _, email = spec.partition(".")
    previews = all_previews()
    preview = previews.get(mailer)
    if preview is None:
        known = ", ".join(previews) or "none found"
        raise MailerError(f"no preview for {mailer!r} (previews: {known})")
    if email not in preview.emails():
        raise MailerError(f"{preview.__name__} has no {email!r} "
                          f"(emails: {', '.join(preview.emails())})")
    return preview, email


def render_preview(spec: str, params: Mapping[str, str] | None = None) -> EmailMessage:
    """The message a preview builds with `params` (its `self.params`), never delivered."""
    preview, email = find_preview(spec)
    built = getattr(preview(params), email)()
    message = getattr(built, "message", built)
    if not isinstance(message, EmailMessage):
        raise MailerError(f"{preview.__name__}.{email} returned {built!r}, not a mail")
    return message


_CID = re.compile(r"""cid:([^"'\s)>]+)""")


def inline_images(message: EmailMessage, html: str) -> str:
    """`html` with each `cid:<id>` of an inline part of `message` replaced by a data: URL, so
    a browser shows the images a mail client would (an unknown id is left as it is)."""
    parts: dict[str, str] = {}
    for part in message.walk():
        content_id = str(part.get("Content-ID", "")).strip().strip("<>")
        payload = part.get_payload(decode=True)
        if content_id and isinstance(payload, bytes):
            parts[content_id] = (f"data:{part.get_content_type()};base64,"
                                 f"{base64.b64encode(payload).decode('ascii')}")
    return _CID.sub(lambda m: parts.get(m.group(1), m.group(0)), html)
