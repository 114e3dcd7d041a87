"""Queue adapters: where `perform_later` sends a job.

``celery`` (default, durable, Redis), ``inline`` (performs at enqueue after a full serialization
round trip), ``test`` (records only, no Redis) and ``async`` (an in-process thread pool; not
durable). Chosen by `use_adapter`, else the ``adapter`` setting / ``JOBKIT_ADAPTER``.
"""

from __future__ import annotations

import importlib

from jobkit.adapters.base import Adapter
from jobkit.cancellation import Cancellation, check_job_id
from jobkit.config import current_settings
from jobkit.errors import ConfigError

__all__ = ["ADAPTERS", "Adapter", "cancel", "current_adapter", "use_adapter"]

ADAPTERS = {  # names as in config.ADAPTER_NAMES
    "celery": "jobkit.adapters.celery:CeleryAdapter",
    "inline": "jobkit.adapters.inline:InlineAdapter",
    "test": "jobkit.adapters.test:TestAdapter",
    "async": "jobkit.adapters.async_:AsyncAdapter",
}

_global: list[Adapter] = []
_by_name: dict[str, Adapter] = {}


def build_adapter(name: str) -> Adapter:
    """A new adapter by its name; ConfigError lists the known names."""
    target = ADAPTERS.get(name)
    if target is None:
        raise ConfigError(f"unknown adapter {name!r}; choose one of {', '.join(ADAPTERS)}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def use_adapter(adapter: str | Adapter | None) -> Adapter | None:
    """Make `adapter` the process-wide one (None: back to the setting); returns the old one."""
    previous = _global[0] if _global else None
    _global.clear()
    if adapter is not None:
        _global.append(build_adapter(adapter) if isinstance(adapter, str) else adapter)
    return previous


def current_adapter() -> Adapter:
    """The adapter in force: the one `use_adapter` set, else the configured one."""
    if _global:
        return _global[0]
    name = current_settings().adapter
    adapter = _by_name.get(name)
    if adapter is None:
        adapter = _by_name[name] = build_adapter(name)
    return adapter


def cancel(job_id: str, *, hard: bool = False) -> Cancellation:
    """Cancel a job (Sidekiq's `cancel!`): a waiting job is removed and kept in the dead set
    with the reason "cancelled"; a running one sees `job.cancelled` become true, and with
    `hard=True` its pool process is stopped where the pool allows (prefork). Never retried.
    The adapter in force decides where: Redis, or the test modes' records (docs/jobs.md)."""
    check_job_id(job_id)
    if type(hard) is not bool:
        raise TypeError(f"jobkit.cancel: hard must be True or False, got {hard!r}")
    return current_adapter().cancel(job_id, hard)
