"""The OPTIONS of a JobkitBackend entry in Django's TASKS setting, checked when Django creates
the backend: a wrong key or value is an error naming it, not a surprise on the worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobkit.durations import seconds

__all__ = ["DEFAULT_RESULT_TTL_SECONDS", "MAX_RETRIES_CAP", "BackendOptions"]

#: How long a task's result stays in Redis after its last change: one day, in seconds.
DEFAULT_RESULT_TTL_SECONDS = 86400.0
#: The most retries a task may get (Sidekiq's default number, about 21 days of backoff).
MAX_RETRIES_CAP = 25


@dataclass(frozen=True)
class BackendOptions:
    """`RESULT_TTL` (seconds or a timedelta) and `MAX_RETRIES` (0 to 25; 0: Django's own
    semantics, a task that raises is FAILED at once)."""

    result_ttl: float = DEFAULT_RESULT_TTL_SECONDS
    max_retries: int = 0

    @classmethod
    def parse(cls, options: Any, alias: str, error: type[Exception]) -> BackendOptions:
        """The options of backend `alias`; `error` names the key and the value at fault."""
        where = f"TASKS[{alias!r}]['OPTIONS']"
        if not isinstance(options, dict):
            raise error(f"{where} must be a dict, not {options!r}")
        unknown = sorted(set(options) - {"RESULT_TTL", "MAX_RETRIES"}, key=str)
        if unknown:
            raise error(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; "
                        f"the options are 'MAX_RETRIES' and 'RESULT_TTL'")
        ttl = options.get("RESULT_TTL", DEFAULT_RESULT_TTL_SECONDS)
        retries = options.get("MAX_RETRIES", 0)
        if type(retries) is not int or not 0 <= retries <= MAX_RETRIES_CAP:
            raise error(f"{where}['MAX_RETRIES'] must be a whole number from 0 to "
                        f"{MAX_RETRIES_CAP}, not {retries!r}")
        return cls(result_ttl=seconds(ttl, f"{where}['RESULT_TTL']", error),
                   max_retries=retries)
