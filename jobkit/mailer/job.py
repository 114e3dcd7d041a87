"""MailDeliveryJob: delivers one mail on a worker (as deliver_later built it, or rendered
again: jobkit.mailer.rendered), on the `mailers` queue."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis

from jobkit import keys
from jobkit.display import MAIL_DELIVERY_JOBS
from jobkit.imports import class_path, import_object
from jobkit.job import Job
from jobkit.mailer.errors import MailerError, PermanentDeliveryError, TransientDeliveryError
from jobkit.mailer.i18n import with_locale
from jobkit.mailer.rendered import message_id, renders_on_worker, unpack
from jobkit.queues import MAILERS_QUEUE
from jobkit.redis_client import get_redis
from jobkit.retries import POLYNOMIALLY_LONGER, retry_on

__all__ = ["MailDeliveryJob"]

logger = logging.getLogger(__name__)

SENT_MARK_SECONDS = 7 * 24 * 3600
DELIVERY_ATTEMPTS = 10


@retry_on(TransientDeliveryError, wait=POLYNOMIALLY_LONGER, attempts=DELIVERY_ATTEMPTS)
class MailDeliveryJob(Job):
    """Transient SMTP failures (connection, timeout, 4xx) are retried; permanent ones (5xx,
    unknown recipient) go straight to the dead set with the server's reply."""

    queue_as = MAILERS_QUEUE

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        MAIL_DELIVERY_JOBS.add(class_path(cls))  # shown as its mailer#action (jobkit.display)

    def perform(self, mailer: str, action: str, args: list, kwargs: dict, params: dict,
                rendered: dict | None = None, locale: str | None = None) -> None:
        """`rendered`: the message deliver_later built (jobkit.mailer.rendered); without it
        the action runs again here. `locale`: the caller's `with_locale`, in force for the
        action and the callbacks."""
        with with_locale(locale) if locale else contextlib.nullcontext():
            self._deliver(mailer, action, args, kwargs, params, rendered)

    def _deliver(self, mailer: str, action: str, args: list, kwargs: dict, params: dict,
                 rendered: dict | None) -> None:
        mark = keys.mail_sent(self.job_id)
        if _sent_before(mark):  # accepted by the server on an earlier run: never resend
            return
        mailer_class = _mailer_class(mailer)
        if rendered and not renders_on_worker(mailer_class):  # (the class may have changed)
            from jobkit.mailer import options
            from jobkit.mailer.delivery import deliver_outgoing

            deliver_outgoing(unpack(rendered), on_sent=lambda: _mark_sent(mark),
                             method=options.delivery_method_for(mailer_class))
            return
        delivery = mailer_class.with_(**params).__getattr__(action)(*args, **kwargs)
        message = delivery.message
        if message is None:
            return
        del message["Message-ID"]
        message["Message-ID"] = message_id(self.job_id, message)  # the same on every attempt
        delivery.deliver_now(on_sent=lambda: _mark_sent(mark))

    def retry_in(self, retry_count: int, error: BaseException) -> Any:
        if isinstance(error, PermanentDeliveryError | MailerError) and not isinstance(
                error, TransientDeliveryError):
            return "kill"  # retrying will not help: dead set, with the reply as the reason
        return None


def _sent_before(mark: str) -> bool:
    try:
        return bool(get_redis().exists(mark))
    except redis.RedisError:  # e.g. the inline adapter in a test without Redis
        return False


def _mark_sent(mark: str) -> None:
    try:
        get_redis().set(mark, "1", ex=SENT_MARK_SECONDS)
    except redis.RedisError:
        logger.warning("could not record that %s was sent; a retry could resend it", mark)


def _mailer_class(path: str) -> Any:
    """The mailer class a payload names. Checked by what it can do rather than against
    `Mailer`: jobkit.mailer.base imports this module to enqueue, and never the reverse."""
    cls = import_object(path, "mailer class")
    if not (isinstance(cls, type) and callable(getattr(cls, "with_", None))
            and callable(getattr(cls, "action_names", None))):
        raise MailerError(f"{path} is not a Mailer class")
    return cls
