"""Mail to users: welcome and password reset."""

from __future__ import annotations

import os
from typing import Any

from mailers.application_mailer import ApplicationMailer
from mailers.tokens import RESET_TOKEN_SECONDS, make_token

# A 1x1 transparent PNG: the logo shown inline (by Content-ID) in the welcome mail.
LOGO_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6300010000000500010d0a2db40000000049454e44ae426082")


def app_url() -> str:
    return os.environ.get("APP_URL", "http://localhost:3000").rstrip("/")


class UserMailer(ApplicationMailer):
    def welcome(self, user: Any) -> Any:
        self.user = user
        self.login_url = f"{app_url()}/login"
        self.attachments.inline["logo.png"] = LOGO_PNG
        return self.mail(to=user.email, subject="Welcome to Example")

    def password_reset(self, user: Any) -> Any:
        self.user = user
        self.reset_url = f"{app_url()}/password/reset?token={make_token(user.id)}"
        self.expires_in_hours = RESET_TOKEN_SECONDS // 3600
        return self.mail(to=user.email, subject="Reset your password")
