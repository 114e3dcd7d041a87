from __future__ import annotations

from types import SimpleNamespace

from jobkit.mailer import Preview
from mailers.user_mailer import UserMailer


def sample_user() -> SimpleNamespace:
    return SimpleNamespace(id=42, name="Ada Lovelace", email="ada@example.com")


class UserMailerPreview(Preview):
    def welcome(self):
        return UserMailer.welcome(sample_user())

    def password_reset(self):
        return UserMailer.password_reset(sample_user())
