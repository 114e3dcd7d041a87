"""What each setting's value may be: the rules jobkit.config checks every value with.

A rule (`Validator`) takes a value and where it came from ("file:line: key", a variable's
name, a `configure` keyword) and returns the value to use, or raises a ConfigError naming
where. Numbers are `Number`s: finite, bounded, never a bool, so a worker refuses to start on
what would fail later (a duration of ``.inf`` stops a timer; an `smtp_url` with no host fails
every delivery).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jobkit.errors import ConfigError
from jobkit.masking import mask_secrets, mask_url

__all__ = [
    "MAX_SECONDS",
    "REDIS_URL_FORMS",
    "SMTP_URL_FORMS",
    "Number",
    "Validator",
    "invalid",
    "is_name_list",
    "is_sentinel_url",
    "module_names",
    "parse_queue",
    "queue_list",
    "rule",
    "sentinel_hosts",
    "shown",
    "valid_redis_url",
    "url_options",
    "LOCALE_FORM",
    "valid_smtp_url",
    "is_fqdn",
    "FQDN_FORM",
    "SMTP_SETTINGS",
]

SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")  # what jobkit.mailer.delivery connects with
REDIS_URL_FORMS = ("a redis://, rediss://, unix:// or sentinel:// URL (several sentinels: "
                   "sentinel://h1:26379;sentinel://h2:26379)")
SMTP_URL_FORMS = ("an smtp://, smtp+starttls:// or smtps:// URL with a host and, if any, a port "
                  "from 1 to 65535 (e.g. smtp://mail.example:587)")
MAX_WHOLE = 2**31 - 1  # any whole-number setting (and queue weight): a C int, a Redis integer
MAX_SECONDS = 1_000_000_000  # any duration (~31 years): below threading.TIMEOUT_MAX (~292 years)


# A validator takes a value and where it came from ("file:line: key", a variable's name, a
# configure() keyword) and returns the value to use, or raises a ConfigError naming `where`.
Validator = Callable[[Any, str], Any]


def invalid(value: Any, where: str, expected: str) -> ConfigError:
    return ConfigError(f"{where}: {shown(value)} is not valid: expected {expected}")


def rule(check: Callable[[Any], Any], expected: str) -> Validator:
    """A validator that keeps a value `check` accepts."""
    def validate(value: Any, where: str) -> Any:
        if not check(value):
            raise invalid(value, where, expected)
        return value

    return validate


_WHOLE_TEXT = re.compile(r"[0-9]+")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Number:
    """A numeric setting: a whole number (an int), or seconds (an int or a float), at least
    `least` (above it when `above`) and at most MAX_WHOLE / MAX_SECONDS, so never infinite or
    NaN. A bool is refused (True is an int to Python). Text is read as the number it spells
    (``"5"`` from ``${VAR}`` or an environment variable); text with a unit (``"10s"``),
    ``"inf"`` and ``"nan"`` are refused."""

    whole: bool
    least: float
    above: bool = False

    @property
    def expected(self) -> str:
        if self.whole:
            return f"a whole number >= {self.least:g} (at most {MAX_WHOLE})"
        return f"seconds {'>' if self.above else '>='} {self.least:g} (at most {MAX_SECONDS})"

    def parse(self, value: Any) -> int | float | None:
        """The number `value` stands for, or None when it is not a valid one."""
        if isinstance(value, str):
            text = value.strip()
            if not (_WHOLE_TEXT if self.whole else _DECIMAL_TEXT).fullmatch(text):
                return None
            try:
                value = int(text) if self.whole else float(text)
            except ValueError:  # more digits than int() reads
                return None
        kinds = int if self.whole else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        high = MAX_WHOLE if self.whole else MAX_SECONDS
        low_ok = value > self.least if self.above else value >= self.least
        return value if low_ok and value <= high else None

    def __call__(self, value: Any, where: str) -> int | float:
        number = self.parse(value)
        if number is None:
            raise invalid(value, where, self.expected)
        return number


WEIGHT = Number(whole=True, least=1)


def parse_queue(spec: Any, where: str = "queues") -> tuple[str, int]:
    """``"name"``, ``"name,3"`` or ``["name", 3]`` -> (name, weight); a weight is WEIGHT."""
    if isinstance(spec, str):
        name, _, weight = spec.partition(",")
        spec = [name.strip(), weight] if weight.strip() else [name.strip()]
    if not isinstance(spec, list | tuple) or len(spec) not in (1, 2):
        raise ConfigError(f"{where}: a queue is a name or [name, weight], got {shown(spec)}")
    name, weight = spec[0], spec[1] if len(spec) == 2 else 1
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: queue name must be a non-empty string, got {shown(name)}")
    number = WEIGHT.parse(weight)
    if number is None:
        raise ConfigError(f"{where}: weight of queue {name!r} must be {WEIGHT.expected}, "
                          f"not {shown(weight)}")
    return name, int(number)


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


def valid_redis_url(value: Any) -> bool:
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


def valid_smtp_url(url: Any) -> bool:
    """True for a URL jobkit.mailer.delivery can connect with: a scheme of SMTP_SCHEMES, a
    host, and a port (if any) from 1 to 65535."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        port = parts.port if parts else None  # ValueError: not a number, or above 65535
    except ValueError:
        return False
    return parts is not None and parts.scheme in SMTP_SCHEMES and bool(parts.hostname) \
        and port != 0 and bool(_HOSTNAME.match(parts.hostname or "")
                               or _HOSTNAME.match(f"[{parts.hostname}]"))


_FQDN = re.compile(r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                   r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
FQDN_FORM = "a fully qualified domain name in ASCII (e.g. mail.example.com)"


_SCHEME_TLS = {"smtp": (False, "auto"), "smtp+starttls": (False, "always"),
               "smtps": (True, "never")}  # (implicit TLS, enable_starttls) each scheme implies


def smtp_tls(url: str, mailer: Any) -> tuple[bool, str]:
    """(implicit TLS, enable_starttls) for a valid `url` and a `mailer` section: the section's
    `tls` and `enable_starttls` win over what the URL's scheme implies. ConfigError when they
    contradict each other (checked when settings load, so a worker refuses to start)."""
    implied_tls, implied_starttls = _SCHEME_TLS[urlsplit(url).scheme]
    tls = bool(mailer.get("tls", implied_tls))
    starttls = str(mailer.get("enable_starttls", "never" if tls else implied_starttls))
    if tls and starttls == "always":
        raise ConfigError("mailer: tls: true (implicit TLS) and enable_starttls: always "
                          "contradict each other; set one of them")
    return tls, starttls


def is_fqdn(value: Any) -> bool:
    """For `mailer.message_id_domain`: dotted labels (spam filters score a bare word)."""
    return isinstance(value, str) and bool(_FQDN.match(value))


def shown(value: Any) -> str:
    """repr(value) with any secret masked (a URL, or a mapping or list holding one)."""
    if isinstance(value, str):
        return repr(mask_url(value))
    if isinstance(value, dict):
        value = {k: mask_url(v) if isinstance(v, str) else v for k, v in value.items()}
    return mask_secrets(repr(value))


def queue_list(value: Any, where: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: must be a non-empty list of queue names")
    queues = tuple(parse_queue(q, f"{where}[{i}]") for i, q in enumerate(value))
    names = [name for name, _ in queues]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{where}: queue {', '.join(map(repr, repeated))} listed twice")
    return queues


def module_names(value: Any, where: str) -> tuple[str, ...]:
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise ConfigError(f"{where}: must be a module name or a list of them")
    return tuple(value)


def is_name_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


URL_PROTOCOLS = ("http", "https")
LOCALE_FORM = re.compile(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*")  # en, fr, pt_BR, zh-Hant


def url_options(value: Any, where: str) -> dict[str, Any]:
    """`default_url_options` (Action Mailer's): {host, protocol, port}, for links in mail."""
    if not isinstance(value, dict):
        raise invalid(value, where, "a mapping of host, protocol, port")
    unknown = sorted(set(value) - {"host", "protocol", "port"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; default_url_options takes "
                          "host, protocol, port")
    host, protocol, port = value.get("host"), value.get("protocol"), value.get("port")
    if host is not None and not (isinstance(host, str) and re.fullmatch(r"[^\s/:?#@]+", host)):
        raise invalid(host, f"{where}.host", "a host name like www.example.com (the protocol "
                      "and port go in their own keys)")
    if protocol is not None and protocol not in URL_PROTOCOLS:
        raise invalid(protocol, f"{where}.protocol", "http or https")
    checked = dict(value)
    if port is not None:
        checked["port"] = Number(whole=True, least=1)(port, f"{where}.port")
        if checked["port"] > 65535:
            raise invalid(port, f"{where}.port", "a port from 1 to 65535")
    return checked


def flag(value: Any, where: str) -> bool:
    """A yes/no setting: a bool, or the text true/false/yes/no (from ``${VAR}``)."""
    words = {"true": True, "yes": True, "false": False, "no": False}
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise invalid(value, where, "true or false")


def readable_file(value: Any, where: str) -> str:
    """A path to a file this process can read (checked when settings load, not per mail)."""
    if not isinstance(value, str) or not value:
        raise invalid(value, where, "the path of a PEM file of CA certificates")
    if not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise ConfigError(f"{where}: {value!r} is not a readable file (want the PEM file of "
                          "the CA certificate(s) that signed the SMTP server's certificate)")
    try:
        ssl.create_default_context(cafile=value)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{where}: {value!r} holds no PEM CA certificate ({exc})") from None
    return value


def shell_words(value: Any, where: str) -> list[str]:
    """A list of arguments, or one string split as a shell would."""
    if is_name_list(value):
        return list(value)
    if not isinstance(value, str):
        raise invalid(value, where, "a list of arguments (or one string, split as a shell "
                                    "would)")
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {value!r} does not split as a shell would ({exc})") \
            from None


def directory(value: Any, where: str) -> str:
    """A directory path (it need not exist yet, but must not be a file)."""
    if not isinstance(value, str) or not value:
        raise invalid(value, where, "a directory (a non-empty string)")
    if os.path.exists(value) and not os.path.isdir(value):
        raise ConfigError(f"{where}: {value!r} exists and is not a directory")
    return value


def _one_of(*choices: str) -> Validator:
    return rule(lambda v: v in choices, f"one of {', '.join(choices)}")


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"
                       r"|^\[[0-9A-Fa-f:.]+\]$")

# The SMTP keys of the `mailer:` section (Action Mailer's smtp_settings names); read by
# jobkit.mailer.smtp.SmtpSettings.from_mailer.
SMTP_SETTINGS: dict[str, Validator] = {
    "openssl_verify_mode": _one_of("peer", "none"),
    "ca_file": readable_file,
    "enable_starttls": _one_of("auto", "always", "never"),
    "tls": flag,
    "authentication": _one_of("plain", "login", "cram_md5"),
    "local_hostname": rule(lambda v: isinstance(v, str) and bool(_HOSTNAME.match(v)),
                           "a host name for EHLO (e.g. mail.example.com) or an address "
                           "literal like [192.0.2.1]"),
    "open_timeout": Number(whole=False, least=0, above=True),
    "read_timeout": Number(whole=False, least=0, above=True),
    "pool_size": Number(whole=True, least=1),
    "max_messages_per_connection": Number(whole=True, least=1),
    "idle_check_after": Number(whole=False, least=0),
}
