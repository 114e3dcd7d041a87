"""The mailer bench/mail.py sends through `deliver_later`: UserMailer's welcome mail with
arguments a job payload can carry (the user's fields, not an object)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from mailers.user_mailer import UserMailer


class BenchMailer(UserMailer):
    @classmethod
    def mailer_name(cls) -> str:
        return "user_mailer"  # UserMailer's templates

    def welcome_user(self, user_id: int, name: str, email: str) -> Any:
        self.action_name = "welcome"  # its templates are welcome.*.j2
        return self.welcome(SimpleNamespace(id=user_id, name=name, email=email))
