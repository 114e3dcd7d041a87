"""Secrets out of anything shown: URLs with passwords, and text that may hold such URLs.

    mask_url("redis://:hunter2@db:6379/0")         -> "redis://:***@db:6379/0"
    mask_url("redis://u:pw@db/0?password=x")        -> "redis://u:***@db/0?password=***"
    mask_url("sentinel://:pw@a:1;sentinel://b:2")   -> "sentinel://:***@a:1;sentinel://b:2"
    mask_secrets("Error connecting to redis://:pw@db: refused") -> "... redis://:***@db: ..."

Nothing here parses strictly: a mistyped URL (``redis//:pw@host``, ``redis://:p@ss@host``,
``redis://:pw`` with no host) is masked too. When in doubt, more is masked, never less.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "mask_secrets", "mask_url"]

MASK = "***"

# Words that make a query parameter (or a `key=value` in text) a secret.
_SECRET_WORDS = r"pass|pwd|secret|token|credential|auth|api[_-]?key|access[_-]?key"
# `?password=value`, `&pass=value`, `;token=value`, or at the very start of the text. The value
# ends at `&`, `#`, white space, or a `;` that starts another URL (kombu's multi-URL form).
_QUERY_SECRET = re.compile(
    rf"(?i)(?:^|(?<=[?&;]))([^=&;?#\s]*(?:{_SECRET_WORDS})[^=&;?#\s]*=)"
    r"((?:(?!;[A-Za-z][A-Za-z0-9+.-]*:/)[^&#\s])*)")
# 'password': 'value' (a dict's repr) and "password": "value" (JSON).
_QUOTED_SECRET = re.compile(
    rf"(?i)(['\"][^'\"\s]*(?:{_SECRET_WORDS})[^'\"\s]*['\"]\s*[:=]\s*)(['\"])(.*?)(\2)")
# kombu's multi-URL form: `sentinel://a:1;sentinel://b:2`; split only where a scheme follows.
_NEXT_URL = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*:/)")
_PORT = re.compile(r"\d*")


def mask_url(url: str) -> str:
    """`url` with any password, token or secret replaced by ``***``.

    Masks the password of ``user:pass@`` (``user:***@``) and ``:pass@`` (``:***@``), the whole
    userinfo when it has no ``:`` (``https://TOKEN@host`` -> ``https://***@host``), and the
    value of any query parameter named like a secret (``password=``, ``pass=``, ``secret=``,
    ``token=``, ``sentinel_password=``...), in each URL of a ``;``-separated list."""
    return _mask(url, bare_userinfo=True) if isinstance(url, str) else url


def mask_secrets(text: str) -> str:
    """`text` (a log line, an exception message) with every URL in it masked by `mask_url`,
    and any ``password=...`` or ``'password': '...'`` too. An e-mail address (``a@b.example``,
    no ``//`` and no ``:`` before the ``@``) is left as it is."""
    if not isinstance(text, str):
        return text
    text = _QUOTED_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}{m.group(4)}", text)
    return re.sub(r"\S+", lambda m: _mask(m.group(0), bare_userinfo=False), text)


def _mask(text: str, bare_userinfo: bool) -> str:
    spans: list[tuple[int, int]] = []
    start = 0
    for part in _NEXT_URL.split(text):
        spans.extend((start + a, start + b) for a, b in _secret_spans(part, bare_userinfo))
        start += len(part) + 1
    return _replace(text, spans)


def _secret_spans(part: str, bare_userinfo: bool) -> list[tuple[int, int]]:
    """Where the secrets of one URL (or URL-like token) are, as (start, end) offsets."""
    spans = [(m.start(2), m.end(2)) for m in _QUERY_SECRET.finditer(part) if m.group(2)]
    slashes = part.find("//")
    begin = slashes + 2 if slashes >= 0 else 0
    at = part.rfind("@")
    if at >= begin:
        userinfo = part[begin:at]
        colon = userinfo.find(":")
        if colon >= 0:
            if at > begin + colon + 1:
                spans.append((begin + colon + 1, at))
        elif userinfo and (bare_userinfo or slashes >= 0):
            spans.append((begin, at))  # a lone token before @: could be a password or token
    elif slashes >= 0:
        # No @: `redis://:pw` or `redis://user:pw` (the host forgotten). A port is digits.
        authority = re.split(r"[/?#]", part[begin:], maxsplit=1)[0]
        authority = authority.rstrip("'\",;)}]>.")  # the quotes and commas of a repr
        if not authority.startswith("["):  # [::1]:6379
            colon = authority.find(":")
            if colon >= 0 and not _PORT.fullmatch(authority[colon + 1:]):
                spans.append((begin + colon + 1, begin + len(authority)))
    return spans


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """Replace each run of overlapping or touching spans by one MASK."""
    if not spans:
        return text
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, last = [], 0
    for a, b in merged:
        out.append(text[last:a])
        out.append(MASK)
        last = b
    out.append(text[last:])
    return "".join(out)
