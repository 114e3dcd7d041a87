"""Signed, expiring tokens for links in mail (password reset), with the standard library.

A token is ``<user id>.<expiry>.<signature>``: HMAC-SHA256 over the first two parts with
``SECRET_KEY``. Anyone can read the user id and expiry; nobody can forge or extend them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

from jobkit.config import current_settings

__all__ = ["InvalidToken", "make_token", "read_token"]

DEV_SECRET = "development-only-secret"  # noqa: S105 - refused outside development
RESET_TOKEN_SECONDS = 2 * 3600


class InvalidToken(ValueError):
    """Tampered, malformed or expired."""


def _secret() -> bytes:
    secret = os.environ.get("SECRET_KEY")
    if secret:
        return secret.encode()
    if current_settings().environment in ("development", "test"):  # also set by -e
        return DEV_SECRET.encode()
    raise RuntimeError("SECRET_KEY must be set to sign tokens outside development")


def _sign(message: str) -> str:
    digest = hmac.new(_secret(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make_token(user_id: int | str, expires_in: float = RESET_TOKEN_SECONDS,
               now: float | None = None) -> str:
    expiry = int((time.time() if now is None else now) + expires_in)
    message = f"{user_id}.{expiry}"
    return f"{message}.{_sign(message)}"


def read_token(token: str, now: float | None = None) -> str:
    """The user id in a valid, unexpired token; InvalidToken otherwise."""
    try:
        user_id, expiry, signature = token.rsplit(".", 2)
        expires_at = int(expiry)
    except ValueError:
        raise InvalidToken("malformed token") from None
    if not hmac.compare_digest(signature, _sign(f"{user_id}.{expiry}")):
        raise InvalidToken("bad signature")
    if (time.time() if now is None else now) > expires_at:
        raise InvalidToken("expired")
    return user_id
