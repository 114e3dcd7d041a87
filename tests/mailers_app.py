"""Mailers for the tests: every Action Mailer feature in one place."""

from __future__ import annotations

from jobkit.mailer import Mailer
from mailers.application_mailer import ApplicationMailer


class ReportMailer(ApplicationMailer):
    default = {"reply_to": "support@example.com", "X-Report-Kind": "monthly"}

    def monthly(self, user, month: str):
        self.user = user
        self.month = month
        self.note = self.params.get("note", "")
        self.attachments["report.csv"] = f"user,month\n{user.email},{month}\n"
        self.attachments["data.bin"] = {"content": b"\x00\x01\x02", "mime_type":
                                        "application/octet-stream"}
        return self.mail(to=[user.email, "boss@example.com"], cc="cc@example.com",
                         bcc="audit@example.com", subject=f"Report for {month}",
                         headers={"X-Month": month})

    def plain_only(self, to: str, subject: str = "Plain"):
        return self.mail(to=to, subject=subject, body="just text")

    def to_anyone(self, to, subject: str = "Hi"):
        self.user = None
        return self.mail(to=to, subject=subject, template_name="monthly_stub")

    def no_template(self, to: str):
        return self.mail(to=to, subject="Nothing to render")

    def nothing(self):
        pass  # sends no mail: deliveries do nothing


class BareMailer(Mailer):
    """No defaults: mail() without a from address."""

    def hello(self, to: str):
        return self.mail(to=to, subject="hi", body="hello")
