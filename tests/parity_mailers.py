"""A mailer with callbacks, rescue_from and URL options, delivered by a real worker in
tests/test_mailer_parity.py (so importable by it, outside the test module)."""

from __future__ import annotations

from typing import Any

from jobkit.mailer import (
    Mailer,
    PermanentDeliveryError,
    after_action,
    after_deliver,
    before_action,
    rescue_from,
)
from jobkit.redis_client import get_redis

DELIVERED = "tests:parity:delivered"  # test bookkeeping, not a jobkit key
BOUNCED = "tests:parity:bounced"


class CampaignMailer(Mailer):
    default = {"from": "news@example.com"}
    default_url_options = {"host": "news.example.com", "protocol": "https"}

    @before_action
    def load(self) -> None:
        self.email = self.params["email"]

    @after_action
    def tag(self) -> None:
        assert self.message is not None
        self.message["X-Campaign"] = "spring"

    @after_deliver
    def record(self) -> None:
        get_redis().rpush(DELIVERED, self.email)

    @rescue_from(PermanentDeliveryError)
    def bounced(self, error: Exception) -> None:
        get_redis().rpush(BOUNCED, f"{self.email}: {error}")

    def issue(self, number: int) -> Any:
        return self.mail(to=self.email, subject=f"Issue {number}",
                         body=f"Read it: {self.url(f'/issues/{number}', ref='mail')}")
