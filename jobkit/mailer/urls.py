"""Absolute links in mail: `default_url_options` and the `url(path, **query)` helper.

A mail is read outside the application, so its links need a host; jobkit has no router, so
where Rails has `user_url(@user)` a template has ``{{ url("/users/" ~ user.id) }}``. The
options come from the `mailer.default_url_options` setting, with a mailer's own
`default_url_options` (class option) winning key by key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from jobkit.config import current_settings
from jobkit.config_values import url_options
from jobkit.errors import ConfigError, JobClassError
from jobkit.mailer.errors import MailerError

__all__ = ["build_url", "check_class_options", "options_for"]

DEFAULT_PORTS = {"http": 80, "https": 443}
PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # RFC 3986 path characters; `%` keeps escapes as given


def check_class_options(cls: Any) -> None:
    try:
        url_options(cls.default_url_options, f"{cls.__qualname__}.default_url_options")
    except ConfigError as exc:
        raise JobClassError(str(exc)) from None


def options_for(cls: Any) -> dict[str, Any]:
    """The setting's options, then each mailer's along the class tree (nearest last)."""
    merged = dict(current_settings().mailer.get("default_url_options") or {})
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("default_url_options") or {})
    return merged


def build_url(options: dict[str, Any], path: str, query: dict[str, Any], who: str) -> str:
    """`protocol://host[:port]/path?query`; the port is left out when it is the protocol's
    default. A full http(s) URL as `path` keeps its host (query appended)."""
    if path.startswith(("http://", "https://")):
        base = path
    else:
        host = options.get("host")
        if not host:
            raise MailerError(f"{who}: no host for url({path!r}): set "
                              "mailer.default_url_options.host in config/jobkit.yml, or "
                              "default_url_options = {'host': ...} on the mailer")
        protocol = options.get("protocol") or "http"
        port = options.get("port")
        netloc = host if port in (None, DEFAULT_PORTS[protocol]) else f"{host}:{port}"
        base = f"{protocol}://{netloc}/{quote(path.lstrip('/'), safe=PATH_SAFE)}"
    if not query:
        return base
    return f"{base}{'&' if '?' in base else '?'}{urlencode(query, doseq=True)}"
