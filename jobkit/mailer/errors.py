"""Mailer errors: each names the header, address, template or SMTP reply at fault."""

from __future__ import annotations

from jobkit.errors import JobkitError

__all__ = [
    "DeliveryError",
    "HeaderInjectionError",
    "InvalidAddressError",
    "InvalidHeaderError",
    "MailerError",
    "MissingRecipientError",
    "PermanentDeliveryError",
    "TemplateError",
    "TemplateMissingError",
    "TransientDeliveryError",
]


class MailerError(JobkitError):
    """Root of mailer errors."""


class InvalidHeaderError(MailerError, ValueError):
    """A header name or value that cannot go in a mail (e.g. a NUL or other control char)."""


class HeaderInjectionError(InvalidHeaderError):
    """A header value holds CR or LF (an attempt to add headers of its own)."""


class InvalidAddressError(MailerError, ValueError):
    """An address that is not user@domain."""


class MissingRecipientError(MailerError, ValueError):
    """mail() was called without `to`."""


class TemplateMissingError(MailerError, LookupError):
    """Neither a text nor an HTML template (nor a body) for an action."""


class TemplateError(MailerError):
    """A template failed to render (syntax error, a name it uses is not set, ...)."""


class DeliveryError(MailerError):
    """The delivery method could not hand the message over."""


class TransientDeliveryError(DeliveryError):
    """Worth trying again later: connection refused, timeout, a 4xx reply."""


class PermanentDeliveryError(DeliveryError):
    """Will not work by retrying: a 5xx reply, e.g. an unknown recipient."""
