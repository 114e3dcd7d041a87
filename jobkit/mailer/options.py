"""Per-mailer delivery options: `delivery_method`, `delivery_job`, `deliver_later_queue_name`.

Checked when the mailer class is defined, so a typo fails at import rather than on a worker.
"""

from __future__ import annotations

from typing import Any

from jobkit.config import current_settings
from jobkit.errors import JobClassError
from jobkit.job import resolve_job_class
from jobkit.mailer.delivery import DELIVERY_METHODS

__all__ = ["check_class_options", "delivery_job_for", "delivery_method_for"]

#: By path, as jobkit.mailer.job names its mailer: that module imports the mailer base (to
#: deliver), which imports this one, so an import here would close a cycle.
DEFAULT_DELIVERY_JOB = "jobkit.mailer.job.MailDeliveryJob"


def check_class_options(cls: Any) -> None:
    name = cls.__qualname__
    method = cls.delivery_method
    if method is not None and method not in DELIVERY_METHODS:
        raise JobClassError(f"{name}.delivery_method {method!r}: choose one of "
                            f"{', '.join(DELIVERY_METHODS)}")
    job = cls.delivery_job
    if job is not None and not (isinstance(job, type)
                                and issubclass(job, resolve_job_class(DEFAULT_DELIVERY_JOB))):
        raise JobClassError(f"{name}.delivery_job {job!r}: want a subclass of "
                            "jobkit.mailer.MailDeliveryJob (it takes the same arguments)")
    queue = cls.deliver_later_queue_name
    if queue is not None and not (isinstance(queue, str) and queue):
        raise JobClassError(f"{name}.deliver_later_queue_name {queue!r}: want a queue name")


def delivery_job_for(cls: Any) -> Any:
    return cls.delivery_job or resolve_job_class(DEFAULT_DELIVERY_JOB)


def delivery_method_for(cls: Any) -> str | None:
    """The mailer's own delivery method, unless the configured one is `test`: tests (and the
    testing modes, which set it) must never send real mail through a mailer's override."""
    if current_settings().mailer.get("delivery_method") == "test":
        return None
    return cls.delivery_method
