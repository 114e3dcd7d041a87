"""Defaults every mailer of the application shares."""

from __future__ import annotations

import os

from jobkit.mailer import Mailer


class ApplicationMailer(Mailer):
    default = {"from": os.environ.get("MAIL_FROM", "Example <no-reply@example.com>")}
    layout = "mailer"
