"""Mail previews (Rails' `ActionMailer::Preview`): see a mail without sending it.

    # mailers/previews/user_mailer_preview.py
    class UserMailerPreview(Preview):
        def welcome(self):
            return UserMailer.welcome(sample_user())

Each public method returns a MessageDelivery (or an EmailMessage) built from sample data.
Previews are found in the modules named by the `previews` list of the `mailer:` settings
(default: ``mailers.previews``, a package whose modules are all imported).
"""

from __future__ import annotations

import importlib
import pkgutil
from email.message import EmailMessage
from typing import Any, ClassVar

from jobkit.config import current_settings
from jobkit.mailer.errors import MailerError

__all__ = ["Preview", "all_previews", "find_preview", "render_preview"]

DEFAULT_PREVIEW_MODULES = ("mailers.previews",)


class Preview:
    """Subclass as `<Mailer>Preview`; every public method is one preview."""

    registry: ClassVar[dict[str, type[Preview]]] = {}

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


def render_preview(spec: str) -> EmailMessage:
    """The message a preview builds, rendered, never delivered."""
    preview, email = find_preview(spec)
    built = getattr(preview(), email)()
    message = getattr(built, "message", built)
    if not isinstance(message, EmailMessage):
        raise MailerError(f"{preview.__name__}.{email} returned {built!r}, not a mail")
    return message
