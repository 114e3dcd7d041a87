"""Settings: one YAML file in the shape of Sidekiq's `config/sidekiq.yml`, plus the environment.

Precedence: defaults < top level of the file < the chosen environment's section < the
variables in ENV_OVERRIDES (``REDIS_URL``, ``JOBKIT_ADAPTER``, ...) < `configure(...)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from jobkit.errors import ConfigError
from jobkit.masking import mask_url

__all__ = [
    "DEFAULT_QUEUES",
    "Settings",
    "configure",
    "current_settings",
    "load_settings",
    "use_settings",
    "parse_queue",
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
POOLS = ("prefork", "threads", "solo")
QUEUE_ORDERS = ("strict", "weighted")
ADAPTER_NAMES = ("celery", "inline", "test", "async")  # see jobkit.adapters
DELIVERY_METHODS = ("smtp", "test", "file", "console")  # see jobkit.mailer.delivery
SECTIONS = ("mailer", "web")  # mappings that environment sections merge into, not replace
MAILER_KEYS = frozenset({"delivery_method", "smtp_url", "file_dir", "timeout", "previews"})
ENVIRONMENT_NAMES = ("development", "test", "staging", "production")
REDIS_URL_FORMS = ("a redis://, rediss://, unix:// or sentinel:// URL (several sentinels: "
                   "sentinel://h1:26379;sentinel://h2:26379)")


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
    environment: str = "development"
    mailer: Mapping[str, Any] = field(default_factory=dict)
    web: Mapping[str, Any] = field(default_factory=dict)

    @property
    def queue_names(self) -> list[str]:
        return [name for name, _ in self.queues]

    def __repr__(self) -> str:  # never a password in a log line or a traceback
        fields = ", ".join(f"{f.name}={_shown(getattr(self, f.name))}"
                           for f in dataclasses.fields(self))
        return f"Settings({fields})"


# Environment variables that win over the file: URLs and secrets belong in the environment.
ENV_OVERRIDES = {
    "REDIS_URL": ("redis_url", str),
    "REDIS_SENTINEL_MASTER": ("sentinel_master", str),
    "JOBKIT_WAIT_FOR_REPLICAS": ("wait_for_replicas", int),
    "JOBKIT_ADAPTER": ("adapter", str),
    "JOBKIT_POLL_INTERVAL": ("poll_interval", float),
    "JOBKIT_HEARTBEAT_TIMEOUT": ("heartbeat_timeout", float),
}

_KEYS = {f.name for f in dataclasses.fields(Settings)} - {"environment"}


def parse_queue(spec: Any, where: str = "queues") -> tuple[str, int]:
    """``"name"``, ``"name,3"`` or ``["name", 3]`` -> (name, weight)."""
    if isinstance(spec, str):
        name, _, weight = spec.partition(",")
        spec = [name.strip(), int(weight) if weight.strip().isdigit() else weight or 1]
    if not isinstance(spec, list | tuple) or len(spec) not in (1, 2):
        raise ConfigError(f"{where}: a queue is a name or [name, weight], got {spec!r}")
    name, weight = spec[0], spec[1] if len(spec) == 2 else 1
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: queue name must be a non-empty string, got {name!r}")
    if type(weight) is not int or weight < 1:
        raise ConfigError(f"{where}: weight of queue {name!r} must be a whole number >= 1")
    return name, weight


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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# key: (check, what a valid value is) for the scalar settings.
_CHECKS: dict[str, tuple[Any, str]] = {
    "concurrency": (lambda v: type(v) is int and v >= 1, "a whole number >= 1"),
    "max_retries": (lambda v: type(v) is int and v >= 0, "a whole number >= 0"),
    "wait_for_replicas": (lambda v: type(v) is int and v >= 0, "a whole number >= 0"),
    "timeout": (lambda v: _is_number(v) and v >= 0, "seconds >= 0"),
    "poll_interval": (lambda v: _is_number(v) and v > 0, "seconds > 0"),
    "heartbeat_timeout": (lambda v: _is_number(v) and v >= 1, "seconds >= 1"),
    "dead_max_jobs": (lambda v: type(v) is int and v >= 1, "a whole number >= 1"),
    "dead_timeout": (lambda v: _is_number(v) and v > 0, "seconds > 0"),
    "pool": (lambda v: v in POOLS, f"one of {', '.join(POOLS)}"),
    "queue_order": (lambda v: v in QUEUE_ORDERS, f"one of {', '.join(QUEUE_ORDERS)}"),
    "redis_url": (lambda v: _valid_redis_url(v), REDIS_URL_FORMS),
    "sentinel_master": (lambda v: v is None or (isinstance(v, str) and v.strip() == v and v),
                        "the name of the master the sentinels watch (a non-empty string)"),
    "adapter": (lambda v: v in ADAPTER_NAMES, f"one of {', '.join(ADAPTER_NAMES)}"),
    "mailer": (lambda v: isinstance(v, dict) and set(v) <= MAILER_KEYS
               and v.get("delivery_method", "smtp") in DELIVERY_METHODS
               and isinstance(v.get("previews", []), list),
               f"a mapping of {', '.join(sorted(MAILER_KEYS))}; delivery_method one of "
               f"{', '.join(DELIVERY_METHODS)}; previews a list of modules"),
    "web": (lambda v: isinstance(v, dict) and set(v) <= {"stuck_after"} and (
        "stuck_after" not in v or (_is_number(v["stuck_after"]) and v["stuck_after"] > 0)),
        "a mapping with stuck_after (seconds > 0)"),
}


def is_sentinel_url(url: str) -> bool:
    """True for ``sentinel://host:port`` and kombu's ``sentinel://a:1;sentinel://b:2``."""
    return isinstance(url, str) and url.startswith("sentinel://")


def sentinel_hosts(url: str) -> list[tuple[str, int]]:
    """(host, port) of each sentinel in a sentinel URL (port 26379 when not given);
    ValueError when one is malformed."""
    hosts = []
    for part in url.split(";"):
        parts = urlsplit(part)
        if parts.scheme != "sentinel" or not parts.hostname:
            raise ValueError("each URL of the list must be sentinel://[:password@]host[:port]")
        hosts.append((parts.hostname, parts.port or 26379))  # .port raises on a bad port
    return hosts


def _valid_redis_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if is_sentinel_url(value):
        try:
            sentinel_hosts(value)
        except ValueError:
            return False
        return True
    if not value.startswith(("redis://", "rediss://", "unix://")) or ";" in value.split("@")[-1]:
        return False
    try:
        urlsplit(value).port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return True


def _shown(value: Any) -> str:
    """repr(value) with any secret masked (a URL, or a mapping holding one)."""
    if isinstance(value, str):
        return repr(mask_url(value))
    if isinstance(value, dict):
        return repr({k: mask_url(v) if isinstance(v, str) else v for k, v in value.items()})
    return repr(value)


def _coerce(key: str, value: Any, where: str) -> Any:
    if key == "queues":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: must be a non-empty list of queue names")
        queues = tuple(parse_queue(q, f"{where}[{i}]") for i, q in enumerate(value))
        names = [name for name, _ in queues]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f"{where}: queue {', '.join(map(repr, repeated))} listed twice")
        return queues
    if key == "require":
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            raise ConfigError(f"{where}: must be a module name or a list of them")
        return tuple(value)
    if isinstance(value, str) and key in ("concurrency", "max_retries", "dead_max_jobs",
                                          "wait_for_replicas") \
            and value.isdigit():
        value = int(value)  # from ${VAR} interpolation
    if isinstance(value, str) and key in ("timeout", "poll_interval", "heartbeat_timeout",
                                          "dead_timeout"):
        with contextlib.suppress(ValueError):
            value = float(value)
    check, expected = _CHECKS[key]
    if not check(value):
        raise ConfigError(f"{where}: {_shown(value)} is not valid: expected {expected}")
    return value


def _unknown_key(key: str, where: str) -> ConfigError:
    near = difflib.get_close_matches(key, sorted(_KEYS | set(ENVIRONMENT_NAMES)), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ConfigError(f"{where}: unknown key{hint}")


def load_settings(path: str | os.PathLike | None = None, environment: str | None = None,
                  environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from `path` (optional) for `environment`, the environment and overrides."""
    environ = os.environ if environ is None else environ
    environment = environment or environ.get("JOBKIT_ENV") or environ.get("APP_ENV") \
        or "development"
    if environment not in ENVIRONMENT_NAMES:
        near = difflib.get_close_matches(environment, ENVIRONMENT_NAMES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown environment {environment!r}{hint}; use one of "
                          f"{', '.join(ENVIRONMENT_NAMES)}")
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_file(Path(path), environment, environ))
    for variable, (key, cast) in ENV_OVERRIDES.items():
        if environ.get(variable):
            try:
                value = cast(environ[variable])
            except ValueError:
                raise ConfigError(f"{variable}: invalid value {_shown(environ[variable])}"
                                  ) from None
            values[key] = _coerce(key, value, variable)
    for key, value in overrides.items():
        if key not in _KEYS:
            raise _unknown_key(key, f"configure({key}=...)")
        if value is not None:
            if key == "queues":
                value = [value] if isinstance(value, str) else list(value)
            values[key] = _coerce(key, value, key)
    if "queue_order" not in values and any(w != 1 for _, w in values.get("queues", ())):
        values["queue_order"] = "weighted"  # Sidekiq: weights given means weighted order
    settings = Settings(environment=environment, **values)
    if is_sentinel_url(settings.redis_url) and not settings.sentinel_master:
        raise ConfigError(
            f"redis_url: {mask_url(settings.redis_url)!r} is a sentinel URL, so sentinel_master "
            "(or REDIS_SENTINEL_MASTER) must name the master the sentinels watch, e.g. "
            "sentinel_master: mymaster")
    return settings


def _read_file(path: Path, environment: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The file's settings for `environment`; every error names the file, line and key."""
    try:
        text = path.read_text()
        data = yaml.safe_load(text)  # safe: no !!python tags, nothing executed
        lines = _key_lines(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}:{line} not valid YAML: {problem}") from None
    data = _strip_colons(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")

    def where(*keys: str) -> str:
        return f"{path}:{lines.get(keys, '?')}: {'.'.join(keys)}"

    for key, value in data.items():
        if key in ENVIRONMENT_NAMES:
            if not isinstance(value, dict | None):
                raise ConfigError(f"{where(key)}: must be a mapping of settings")
            for inner in value or {}:
                if inner not in _KEYS:
                    raise _unknown_key(inner, where(key, inner))
        elif key not in _KEYS:
            raise _unknown_key(key, where(key))
    chosen = {key: (key,) for key in data if key not in ENVIRONMENT_NAMES}
    chosen.update({key: (environment, key) for key in data.get(environment) or {}})
    values = {}
    for key, keys in chosen.items():
        raw = data[keys[0]] if len(keys) == 1 else data[environment][key]
        if key in SECTIONS and len(keys) == 2 and isinstance(data.get(key), dict) \
                and isinstance(raw, dict):
            raw = {**data[key], **raw}  # an environment refines a section, key by key
        values[key] = _coerce(key, _interpolate(raw, environ, where(*keys)), where(*keys))
    return values


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line numbers of top-level keys and of keys one level inside environment sections."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node | None, prefix: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                keys = (*prefix, str(key_node.value).lstrip(":"))
                lines[keys] = key_node.start_mark.line + 1
                if not prefix and keys[0] in ENVIRONMENT_NAMES:
                    walk(value_node, keys)

    walk(yaml.compose(text, Loader=yaml.SafeLoader), ())
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
