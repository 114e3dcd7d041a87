"""Settings: one YAML file in the shape of Sidekiq's `config/sidekiq.yml`, plus the environment.

Precedence: defaults < top level of the file < the chosen environment's section < the
variables in ENV_OVERRIDES (``REDIS_URL``, ``JOBKIT_ADAPTER``, ...) < `configure(...)`.

Every value is checked as it is read, by the rule of its key (_VALIDATORS, and _SECTION_KEYS
inside `mailer` and `web`; the rules themselves are in jobkit.config_values), so a worker
refuses to start on what would fail later (a duration of ``.inf``, an `smtp_url` with no
host); the ConfigError names the file, line and key, the environment variable, or the
`configure` keyword the value came from. The file itself is read by jobkit.yaml_file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobkit.config_values import (
    FQDN_FORM,
    LOCALE_FORM,
    REDIS_URL_FORMS,
    SMTP_SETTINGS,
    SMTP_URL_FORMS,
    Number,
    Validator,
    directory,
    flag,
    invalid,
    is_fqdn,
    is_name_list,
    is_sentinel_url,
    module_names,
    queue_list,
    rule,
    shell_words,
    shown,
    smtp_tls,
    url_options,
    valid_redis_url,
    valid_smtp_url,
)
from jobkit.errors import ConfigError
from jobkit.masking import mask_url
from jobkit.periodic_entry import PeriodicEntry, parse_entries
from jobkit.yaml_file import read_yaml

__all__ = [
    "DEFAULT_QUEUES",
    "Settings",
    "configure",
    "current_settings",
    "load_settings",
    "use_settings",
]

DEFAULT_CONFIG_PATH = "config/jobkit.yml"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_QUEUES = ("default", "mailers", "storage_analysis", "storage_purge")
DEFAULT_CONCURRENCY = 5
DEFAULT_TIMEOUT_SECONDS = 25.0  # Heroku sends SIGKILL 30 s after SIGTERM
DEFAULT_MAX_RETRIES = 25  # Sidekiq's default
DEFAULT_POLL_INTERVAL_SECONDS = 5.0  # scheduled set poller, at most (jittered below)
DEFAULT_DEAD_MAX_JOBS = 10_000  # Sidekiq's dead_max_jobs
DEFAULT_DEAD_TIMEOUT_SECONDS = 180 * 24 * 3600  # Sidekiq's dead_timeout_in_seconds: 6 months
DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 10.0  # a worker silent this long is dead: jobs put back
DEFAULT_IDLE_TIMEOUT_SECONDS = 60.0  # on_demand: a worker with nothing to do this long exits
MODES = ("service", "on_demand")
POOLS = ("prefork", "threads", "solo", "asyncio")
QUEUE_ORDERS = ("strict", "weighted")
ADAPTER_NAMES = ("celery", "inline", "test", "async")  # see jobkit.adapters
DELIVERY_METHODS = ("smtp", "test", "file", "console", "sendmail")  # see jobkit.mailer.delivery
#: The web app's languages (jobkit/web/locales), for `web: locale`.
WEB_LOCALES = ("en", "ja", "vi")
#: `web: stuck_status`: how /status.json spells "stuck" ("stucked": Shirasagi's).
STUCK_STATUSES = ("stuck", "stucked")
SECTIONS = ("mailer", "web")  # mappings that environment sections merge into, not replace
ENVIRONMENT_NAMES = ("development", "test", "staging", "production")


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    sentinel_master: str | None = None
    wait_for_replicas: int = 0
    adapter: str = "celery"
    concurrency: int = DEFAULT_CONCURRENCY
    queues: tuple[tuple[str, int], ...] = tuple((q, 1) for q in DEFAULT_QUEUES)
    queue_order: str = "strict"
    pool: str = "prefork"
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES
    poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS
    dead_max_jobs: int = DEFAULT_DEAD_MAX_JOBS
    dead_timeout: float = DEFAULT_DEAD_TIMEOUT_SECONDS
    require: tuple[str, ...] = ()
    #: `service`: workers run under a process manager. `on_demand`: an enqueue starts a worker
    #: when none consumes the queue (at most `on_demand_workers`), which exits after
    #: `idle_timeout` seconds without work (jobkit.on_demand).
    mode: str = "service"
    on_demand_workers: int = 1
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_SECONDS
    #: A job enqueued inside a database transaction is held until it commits (a class's own
    #: `enqueue_after_transaction_commit` wins; jobkit.transactions).
    enqueue_after_transaction_commit: bool = True
    #: Workers record per job class metrics (jobkit.metrics; the Metrics page, `/metrics`).
    metrics: bool = True
    #: Workers send Celery's task events (its `-E`) from their start, for Flower and `celery
    #: events`; off saves three Redis publishes per job.
    task_events: bool = True
    environment: str = "development"
    mailer: Mapping[str, Any] = field(default_factory=dict)
    web: Mapping[str, Any] = field(default_factory=dict)
    #: Periodic jobs (jobkit.periodic), by name, from `schedule:` (or sidekiq-scheduler's
    #: `scheduler: {schedule: ...}`); an environment's entries replace those of the same name.
    schedule: tuple[PeriodicEntry, ...] = ()
    #: One line each on what the file holds that jobkit ignores (a copied sidekiq.yml's own
    #: keys); `config check` prints them and a worker logs them.
    notes: tuple[str, ...] = field(default=(), compare=False)
    #: The settings file read, if any (a worker started on demand reads the same one).
    source: str | None = field(default=None, compare=False)

    @property
    def queue_names(self) -> list[str]:
        return [name for name, _ in self.queues]

    def __repr__(self) -> str:  # never a password in a log line or a traceback
        fields = ", ".join(f"{f.name}={shown(getattr(self, f.name))}"
                           for f in dataclasses.fields(self))
        return f"Settings({fields})"


# Environment variables that win over the file: URLs and secrets belong in the environment.
# Their text is read like a value in the file (a number as its digits).
ENV_OVERRIDES = {
    "REDIS_URL": "redis_url",
    "REDIS_SENTINEL_MASTER": "sentinel_master",
    "JOBKIT_WAIT_FOR_REPLICAS": "wait_for_replicas",
    "JOBKIT_ADAPTER": "adapter",
    "JOBKIT_POLL_INTERVAL": "poll_interval",
    "JOBKIT_HEARTBEAT_TIMEOUT": "heartbeat_timeout",
    "JOBKIT_METRICS": "metrics",
}
ENVIRONMENT_VARIABLES = ("JOBKIT_ENV", "APP_ENV")  # choose the environment, in this order

_KEYS = {f.name for f in dataclasses.fields(Settings)} - {"environment", "notes", "source"}

# Sidekiq's settings that mean nothing here: a copied sidekiq.yml keeps them, with a note each.
SIDEKIQ_ONLY_KEYS = {
    "verbose": "the worker's log level is its -l option",
    "pidfile": "run the worker under a process manager (systemd, a Procfile)",
    "logfile": "the worker logs to standard output",
    "daemon": "run the worker under a process manager (systemd, a Procfile)",
    "tag": "the worker's name is its -n option",
    "labels": "the worker's name is its -n option",
    "index": "the worker's name is its -n option",
    "strict": "the order is queue_order: strict or weighted",
    "environment": "the environment is -e, JOBKIT_ENV or APP_ENV",
    "lifecycle_events": "jobkit's signals are Celery's and jobkit's own",
    "average_scheduled_poll_interval": "jobkit's is poll_interval",
    "poll_interval_average": "jobkit's is poll_interval",
    "dead_timeout_in_seconds": "jobkit's is dead_timeout",
    "shutdown_timeout": "jobkit's is timeout",
    "retry": "jobkit's is max_retries",
    "limits": "sidekiq-limit_fetch's queue limits",
    "redis_host": "jobkit's Redis is redis_url or REDIS_URL",
    "redis_port": "jobkit's Redis is redis_url or REDIS_URL",
    "redis_database": "jobkit's Redis is redis_url or REDIS_URL",
    "dynamic": "sidekiq-scheduler's; entries added at runtime always persist here",
    "enabled": "sidekiq-scheduler's; every worker runs the schedule here",
}
PREFORK_PROCESSES_PER_CORE = 4  # beyond this, a Sidekiq-sized concurrency is worth a note

_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, environ: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        def substitute(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if environ.get(name):
                return environ[name]
            if default is None:  # as in the shell, ${VAR:-x} also covers a set but empty VAR
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return default

        return _ENV_VAR.sub(substitute, value)
    if isinstance(value, list):
        return [_interpolate(v, environ, where) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, f"{where}.{k}") for k, v in value.items()}
    return value


def _strip_colons(data: Any) -> Any:
    """Sidekiq's Ruby-symbol keys (``:concurrency: 5``) read as plain keys."""
    if isinstance(data, dict):
        return {str(k).lstrip(":"): _strip_colons(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_strip_colons(v) for v in data]
    return data


# Every setting: its validator. Numbers: finite, bounded, never a bool (see Number).
_VALIDATORS: dict[str, Validator] = {
    "concurrency": Number(whole=True, least=1),
    "max_retries": Number(whole=True, least=0),
    "wait_for_replicas": Number(whole=True, least=0),
    "dead_max_jobs": Number(whole=True, least=1),
    "timeout": Number(whole=False, least=0),
    "poll_interval": Number(whole=False, least=0, above=True),
    "heartbeat_timeout": Number(whole=False, least=1),
    "dead_timeout": Number(whole=False, least=0, above=True),
    "queues": queue_list,
    "require": module_names,
    "pool": rule(lambda v: v in POOLS, f"one of {', '.join(POOLS)}"),
    "queue_order": rule(lambda v: v in QUEUE_ORDERS, f"one of {', '.join(QUEUE_ORDERS)}"),
    "redis_url": rule(valid_redis_url, REDIS_URL_FORMS),
    "sentinel_master": rule(
        lambda v: v is None or (isinstance(v, str) and v.strip() == v and v),
        "the name of the master the sentinels watch (a non-empty string)"),
    "adapter": rule(lambda v: v in ADAPTER_NAMES, f"one of {', '.join(ADAPTER_NAMES)}"),
    "schedule": parse_entries,
    "mode": rule(lambda v: v in MODES, f"one of {', '.join(MODES)}"),
    "on_demand_workers": Number(whole=True, least=1),
    "idle_timeout": Number(whole=False, least=0, above=True),
    "enqueue_after_transaction_commit": rule(lambda v: type(v) is bool, "true or false"),
    "metrics": flag,
    "task_events": flag,
}

# The keys of the mappings in SECTIONS, each with its validator.
_SECTION_KEYS: dict[str, dict[str, Validator]] = {
    "mailer": {
        "delivery_method": rule(lambda v: v in DELIVERY_METHODS,
                                 f"one of {', '.join(DELIVERY_METHODS)}"),
        "smtp_url": rule(valid_smtp_url, SMTP_URL_FORMS),
        "file_dir": directory,
        "timeout": Number(whole=False, least=0, above=True),
        "previews": rule(is_name_list, "a list of module names"),
        "default_url_options": url_options,
        "locale_dir": rule(lambda v: isinstance(v, str) and v,
                           "a directory of gettext catalogs (a non-empty string)"),
        "default_locale": rule(lambda v: isinstance(v, str) and bool(LOCALE_FORM.fullmatch(v)),
                               "a language tag like en, fr or pt_BR"),
        "sendmail_location": rule(lambda v: isinstance(v, str) and v,
                                  "the path of a sendmail program"),
        "sendmail_arguments": shell_words,
        "message_id_domain": rule(is_fqdn, FQDN_FORM),
        **SMTP_SETTINGS,
    },
    "web": {"stuck_after": Number(whole=False, least=0, above=True),
            "locale": rule(lambda v: v in WEB_LOCALES, f"one of {', '.join(WEB_LOCALES)}"),
            "stuck_status": rule(lambda v: v in STUCK_STATUSES,
                                 f"one of {', '.join(STUCK_STATUSES)}")},
}


def _section(key: str, value: Any, where: str, where_of: Callable[[str], str]) -> dict:
    """A `mailer` or `web` mapping, each of its values checked; `where_of(name)` says where
    the value of `name` came from."""
    validators = _SECTION_KEYS[key]
    if not isinstance(value, dict):
        raise invalid(value, where, f"a mapping of {', '.join(sorted(validators))}")
    for name in value:
        if name not in validators:
            hint = _did_you_mean(name, sorted(validators))
            raise ConfigError(f"{where_of(name)}: unknown key{hint}; {key} takes "
                              f"{', '.join(sorted(validators))}")
    return {name: validators[name](v, where_of(name)) for name, v in value.items()}


def _coerce(key: str, value: Any, where: str,
            where_of: Callable[[str], str] | None = None) -> Any:
    """The value to use for setting `key`, or a ConfigError naming `where` (and, inside a
    section, `where_of(name)`: by default ``where.name``)."""
    if key in SECTIONS:
        return _section(key, value, where, where_of or (lambda name: f"{where}.{name}"))
    return _VALIDATORS[key](value, where)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of `choices`, or nothing."""
    near = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _unknown_key(key: str, where: str) -> ConfigError:
    hint = _did_you_mean(key, sorted(_KEYS | set(ENVIRONMENT_NAMES) | set(SIDEKIQ_ONLY_KEYS)))
    return ConfigError(f"{where}: unknown key{hint}")


def _environment(environment: str | None, environ: Mapping[str, str]) -> str:
    """The environment asked for, else the first of ENVIRONMENT_VARIABLES set, else
    development; an unknown name is refused, naming the variable it came from."""
    variable = None
    if not environment:
        variable = next((v for v in ENVIRONMENT_VARIABLES if environ.get(v)), None)
        environment = environ[variable] if variable else "development"
    if environment not in ENVIRONMENT_NAMES:
        hint = _did_you_mean(environment, ENVIRONMENT_NAMES)
        source = f"{variable}: " if variable else ""
        raise ConfigError(f"{source}unknown environment {environment!r}{hint}; use one of "
                          f"{', '.join(ENVIRONMENT_NAMES)}")
    return environment


def load_settings(path: str | os.PathLike | None = None, environment: str | None = None,
                  environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from `path` (optional) for `environment`, the environment and overrides."""
    environ = os.environ if environ is None else environ
    environment = _environment(environment, environ)
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_file(Path(path), environment, environ))
    for variable, key in ENV_OVERRIDES.items():
        if environ.get(variable):
            values[key] = _coerce(key, environ[variable], variable)
    if environ.get("SMTP_URL"):  # read by the mailer at each delivery; checked here all the same
        _SECTION_KEYS["mailer"]["smtp_url"](environ["SMTP_URL"], "SMTP_URL")
    for key, value in overrides.items():
        if key not in _KEYS:
            raise _unknown_key(key, f"configure({key}=...)")
        if value is not None:
            if key == "queues":
                value = [value] if isinstance(value, str) else list(value)
            values[key] = _coerce(key, value, key)
    if "queue_order" not in values and any(w != 1 for _, w in values.get("queues", ())):
        values["queue_order"] = "weighted"  # Sidekiq: weights given means weighted order
    settings = Settings(environment=environment, source=None if path is None else str(path),
                        **values)
    smtp_tls(environ.get("SMTP_URL") or settings.mailer.get("smtp_url", "smtp://localhost"),
             settings.mailer)
    if is_sentinel_url(settings.redis_url) and not settings.sentinel_master:
        raise ConfigError(
            f"redis_url: {mask_url(settings.redis_url)!r} is a sentinel URL, so sentinel_master "
            "(or REDIS_SENTINEL_MASTER) must name the master the sentinels watch, e.g. "
            "sentinel_master: mymaster")
    return settings


def _read_file(path: Path, environment: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The file's settings for `environment`; every error names the file, line and key."""
    data, node = read_yaml(path)
    lines = _key_lines(node)
    data = _strip_colons(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")

    def where(*keys: str) -> str:
        return f"{path}:{lines.get(keys, '?')}: {'.'.join(keys)}"

    notes: list[str] = []
    _lift_scheduler(data, where, notes)
    for key, value in data.items():
        if key in ENVIRONMENT_NAMES:
            if not isinstance(value, dict | None):
                raise ConfigError(f"{where(key)}: must be a mapping of settings")
            for inner in value or {}:
                _check_key(inner, where(key, inner), notes)
        elif key not in _KEYS and isinstance(value, dict) \
                and any(inner in _KEYS or inner in SIDEKIQ_ONLY_KEYS for inner in value):
            raise ConfigError(f"{where(key)}: unknown environment; jobkit's environments are "
                              f"{', '.join(ENVIRONMENT_NAMES)}: use one of them (rename the "
                              "section) or move its settings to the top level")
        else:
            _check_key(key, where(key), notes)
    chosen = {key: (key,) for key in data if key in _KEYS}
    chosen.update({key: (environment, key) for key in data.get(environment) or {}
                   if key in _KEYS})
    values = {}
    for key, keys in chosen.items():
        raw = data[keys[0]] if len(keys) == 1 else data[environment][key]
        if key in SECTIONS and isinstance(raw, dict):
            values[key] = _read_section(data, keys, raw, where, environ)
        elif key == "schedule":
            values[key] = _read_schedule(data, keys, where, environ)
        else:
            values[key] = _coerce(key, _interpolate(raw, environ, where(*keys)), where(*keys))
    values["notes"] = tuple(notes)
    return values


def _lift_scheduler(data: dict, where: Callable[..., str], notes: list[str]) -> None:
    """sidekiq-scheduler's `scheduler: {schedule: ...}` read as `schedule:` (its other keys,
    such as `enabled` or `dynamic`, noted)."""
    sections = [((), data), *(((k,), v) for k, v in data.items() if k in ENVIRONMENT_NAMES)]
    for prefix, section in sections:
        scheduler = section.get("scheduler") if isinstance(section, dict) else None
        if not isinstance(scheduler, dict):
            continue
        for key in scheduler:
            if key != "schedule":
                notes.append(f"{where(*prefix, 'scheduler')}.{key}: sidekiq-scheduler's "
                             "setting, ignored here")
        if "schedule" in scheduler:
            if "schedule" in section:
                raise ConfigError(f"{where(*prefix, 'scheduler')}: give schedule: or "
                                  "scheduler: schedule:, not both")
            section["schedule"] = scheduler["schedule"]
        del section["scheduler"]


def _read_schedule(data: dict, keys: tuple[str, ...], where: Callable[..., str],
                   environ: Mapping[str, str]) -> tuple[PeriodicEntry, ...]:
    """The top level's entries, with an environment's replacing those of the same name;
    each error names the entry's own line."""
    def parsed(*at: str) -> tuple[PeriodicEntry, ...]:
        """The entries at key path `at`: ("schedule",) or (environment, "schedule")."""
        section = data if len(at) == 1 else data[at[0]]
        raw = _interpolate(section.get("schedule") or {}, environ, where(*at))
        return parse_entries(raw, where(*at), lambda name: where(*at, name))

    top = parsed("schedule")
    if len(keys) == 1:
        return top
    own = parsed(*keys)
    names = {entry.name for entry in own}
    return tuple(entry for entry in top if entry.name not in names) + own


def _check_key(key: str, where: str, notes: list[str]) -> None:
    """A key of the file is a setting, or one of Sidekiq's (noted), or refused."""
    if key in _KEYS:
        return
    if key in SIDEKIQ_ONLY_KEYS:
        notes.append(f"{where}: Sidekiq's setting, ignored here: {SIDEKIQ_ONLY_KEYS[key]}")
        return
    raise _unknown_key(key, where)


def machine_notes(settings: Settings, cores: int | None = None) -> list[str]:
    """Notes on the settings for this machine: a concurrency copied from a sidekiq.yml (where
    it counts threads) starts that many processes under prefork."""
    cores = cores or os.cpu_count() or 1
    if settings.pool == "prefork" and \
            settings.concurrency > PREFORK_PROCESSES_PER_CORE * cores:
        return [f"concurrency {settings.concurrency} starts {settings.concurrency} processes "
                f"(pool prefork) on {cores} core(s). Sidekiq's concurrency counts threads: for "
                "jobs that mostly wait (HTTP, mail, the database) use pool: threads (or -P "
                "threads); for CPU-bound jobs, about one process per core"]
    return []


def _read_section(data: dict, keys: tuple[str, ...], raw: dict, where: Callable[..., str],
                  environ: Mapping[str, str]) -> dict:
    """A `mailer` or `web` mapping; one in an environment section refines the top-level one
    key by key. An error names the line of the key inside it."""
    key = keys[-1]
    top = data[key] if len(keys) == 2 and isinstance(data.get(key), dict) else {}

    def where_of(name: str) -> str:
        return where(*keys, name) if name in raw else where(key, name)

    merged = {name: _interpolate(v, environ, where_of(name)) for name, v in {**top, **raw}.items()}
    return _coerce(key, merged, where(*keys), where_of)


def _key_lines(node: yaml.Node | None) -> dict[tuple[str, ...], int]:
    """Line numbers of top-level keys, of keys one level inside environment sections, and of
    the keys inside SECTIONS (at the top level or in an environment section)."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node | None, prefix: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                keys = (*prefix, str(key_node.value).lstrip(":"))
                lines[keys] = key_node.start_mark.line + 1
                # sidekiq-scheduler's scheduler.schedule is read as schedule (_lift_scheduler)
                lines.setdefault(tuple(k for k in keys if k != "scheduler"), lines[keys])
                if (not prefix and keys[0] in ENVIRONMENT_NAMES) \
                        or (keys[-1] in (*SECTIONS, "schedule", "scheduler")
                            and len(keys) <= 3):
                    walk(value_node, keys)

    walk(node, ())
    return lines


_current: list[Settings] = []


def default_config_path() -> str | None:
    """``JOBKIT_CONFIG``, else ``config/jobkit.yml`` when the current directory has one."""
    path = os.environ.get("JOBKIT_CONFIG")
    if path:
        return path
    return DEFAULT_CONFIG_PATH if Path(DEFAULT_CONFIG_PATH).is_file() else None


def current_settings() -> Settings:
    """The settings in force in this process (from the environment until `configure`)."""
    if not _current:
        _current.append(load_settings(default_config_path()))
    return _current[0]


def configure(path: str | os.PathLike | None = None, environment: str | None = None,
              **overrides: Any) -> Settings:
    """Set this process's settings, e.g. ``jobkit.configure(redis_url="redis://...")``.

    Without `path`, the default file is read (see `default_config_path`).
    """
    return use_settings(load_settings(path or default_config_path(), environment, **overrides))


def use_settings(settings: Settings) -> Settings:
    """Put ready-made settings in force (e.g. to restore earlier ones in a test)."""
    _current[:] = [settings]
    return settings
