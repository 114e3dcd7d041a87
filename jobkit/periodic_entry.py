"""A periodic job's entry, as `schedule:` in the settings (or `add` at runtime) defines it.

The shapes of sidekiq-cron and sidekiq-scheduler: a name, ``cron`` (five or six fields, with
a time zone) or ``every`` (``30s``, ``5m``, ``1h``), ``class``, ``queue``, ``args``,
``kwargs``, ``description``, ``enabled``, and ``missed`` (``skip``, the default, or
``run_last``). Checked when the settings load, so a bad entry stops a worker at boot with its
file, line and key; the class is imported by the worker (jobkit.periodic.check_classes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobkit.errors import ConfigError
from jobkit.periodic_schedule import Cron, Schedule, ScheduleError, parse_schedule

__all__ = ["ENTRY_KEYS", "MISSED_CHOICES", "PeriodicEntry", "parse_entries", "parse_entry"]

MISSED_CHOICES = ("skip", "run_last")
ENTRY_KEYS = ("cron", "every", "interval", "timezone", "tz", "class", "queue", "args", "kwargs",
              "description", "enabled", "status", "missed", "date_as_argument")
# Keys sidekiq-cron and sidekiq-scheduler entries may hold that mean nothing here.
IGNORED_KEYS = ("active_job", "include_metadata", "name", "queue_name_prefix", "source")


@dataclass(frozen=True)
class PeriodicEntry:
    """One periodic job: `job_class` (an import path) enqueued with `args` / `kwargs` on
    `queue` (None: the class's own) at each tick of `schedule`."""

    name: str
    schedule: Schedule
    job_class: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    description: str = ""
    enabled: bool = True
    missed: str = "skip"
    #: sidekiq-cron's option: the tick (Unix seconds) is passed as the last argument.
    date_as_argument: bool = False
    source: str = ""  # where it was defined: "file:line: schedule.name", or "runtime"

    @property
    def arguments_text(self) -> str:
        """``args=['nightly'] kwargs={'kind': 'weekday'}``, for listings."""
        text = f"args={list(self.args)!r}"
        if self.kwargs:
            text += f" kwargs={dict(self.kwargs)!r}"
        if self.date_as_argument:
            text += " + the tick"
        return text

    @property
    def schedule_text(self) -> str:
        """``cron 0 9 * * 1-5 (Europe/Paris)`` or ``every 30s``, for listings."""
        if isinstance(self.schedule, Cron):
            zone = self.schedule.zone
            zone = "" if zone == "UTC" or zone in self.schedule.expression else f" ({zone})"
            return f"cron {self.schedule.expression}{zone}"
        return f"every {self.schedule.text}"


def parse_entry(name: str, data: Any, where: str) -> PeriodicEntry:
    """An entry from its mapping; ConfigError naming `where` (and the key) when it is bad."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: an entry is a mapping with cron or every, and class")
    unknown = [key for key in data if key not in ENTRY_KEYS and key not in IGNORED_KEYS]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; an entry takes "
                          f"{', '.join(ENTRY_KEYS)}")
    if "interval" in data and "every" not in data:  # sidekiq-scheduler's other spelling
        data = {**data, "every": data["interval"]}
    try:
        schedule = parse_schedule({k: v for k, v in data.items() if k != "interval"})
    except ScheduleError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    job_class = data.get("class", name)  # sidekiq-scheduler: the entry's name by default
    if not isinstance(job_class, str) or "." not in job_class:
        raise ConfigError(f"{where}.class: write the job class's import path "
                          f"(app.jobs.ReportJob), not {job_class!r}")
    args, kwargs = data.get("args", []), data.get("kwargs", {})
    if isinstance(args, Mapping) and not kwargs:  # sidekiq-cron allows a hash: keyword args
        args, kwargs = [], args
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}.args: a list of arguments (or a mapping of keyword "
                          "arguments)")
    queue = data.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ConfigError(f"{where}.queue: a queue name, not {queue!r}")
    enabled = data.get("enabled", data.get("status", "enabled") == "enabled")  # sidekiq-cron
    date_arg = data.get("date_as_argument", False)
    for key, flag in (("enabled", enabled), ("date_as_argument", date_arg)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{where}.{key}: true or false, not {flag!r}")
    missed = data.get("missed", "skip")
    if missed not in MISSED_CHOICES:
        raise ConfigError(f"{where}.missed: one of {', '.join(MISSED_CHOICES)}, not {missed!r}")
    return PeriodicEntry(name, schedule, job_class, tuple(args), dict(kwargs), queue,
                         str(data.get("description") or ""), enabled, missed, date_arg, where)


def parse_entries(data: Any, where: str, where_of: Callable[[str], str] | None = None
                  ) -> tuple[PeriodicEntry, ...]:
    """The entries of a `schedule:` mapping (name -> entry), or of sidekiq-cron's list of
    entries each with a `name`; `where_of(name)` says where an entry was written."""
    if isinstance(data, list):
        named = {}
        for i, item in enumerate(data):
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                raise ConfigError(f"{where}[{i}]: a listed entry needs a name")
            named[item["name"]] = {k: v for k, v in item.items() if k != "name"}
        data = named
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: a mapping of entry names to entries")
    where_of = where_of or (lambda name: f"{where}.{name}")
    return tuple(parse_entry(str(name), entry, where_of(str(name)))
                 for name, entry in data.items())
