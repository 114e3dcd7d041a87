"""The ERB a copied `config/sidekiq.yml` holds, read as jobkit's ``${VAR}`` interpolation.

Sidekiq renders its YAML through ERB; jobkit does not run Ruby, but the forms real files use to
read the environment map one to one:

    <%= ENV['X'] %>, <%= ENV["X"] %>, <%= ENV.fetch('X') %>     ->  ${X}
    <%= ENV.fetch('X', 10) %>, <%= ENV.fetch('X') { 10 } %>     ->  ${X:-10}
    <%= ENV['X'] || 10 %>, <%= ENV['X'] ? ENV['X'].to_i : 10 %>  ->  ${X:-10}

with ``.to_i`` (or ``.to_s``, ``.to_sym``) after them dropped: a number read from the
environment is read from its digits anyway. ERB comments (``<%# ... %>``) go. Any other ERB
(a ``<% %>`` statement, a method call) is refused with its line and the ``${X:-default}`` to
write instead, never read as text.
Lines keep their numbers, so later errors still point at the right line.
"""

from __future__ import annotations

import re
from pathlib import Path

from jobkit.errors import ConfigError

__all__ = ["translate_erb"]

_DEFAULT = r"""(?:-?\d+(?:\.\d+)?|'[^'\n}#]*'|"[^"\n}#]*"|nil|true|false)"""
_ENV_READ = re.compile(
    r"<%=[ \t]*ENV[ \t]*"
    r"""(?:\[[ \t]*(?P<q1>['"])(?P<indexed>[A-Za-z_]\w*)(?P=q1)[ \t]*\]"""  # ENV['X']
    r"""(?:[ \t]*\?[ \t]*ENV[ \t]*\[[ \t]*(?P=q1)(?P=indexed)(?P=q1)[ \t]*\](?:\.to_(?:i|s|sym))?"""
    rf"[ \t]*:[ \t]*(?P<otherwise>{_DEFAULT}))?"  # ENV['X'] ? ENV['X'].to_i : d
    rf"(?:[ \t]*\|\|[ \t]*(?P<either>{_DEFAULT}))?"  # ENV['X'] || d
    r"""|\.fetch\([ \t]*(?P<q2>['"])(?P<fetched>[A-Za-z_]\w*)(?P=q2)"""  # ENV.fetch('X'
    rf"[ \t]*(?:,[ \t]*(?P<default>{_DEFAULT})[ \t]*)?\)"  # , d)
    rf"(?:[ \t]*\{{[ \t]*(?P<block>{_DEFAULT})[ \t]*\}})?)"  # { d }
    r"[ \t]*(?:\.to_(?:i|s|sym))?[ \t]*-?%>")
_COMMENT = re.compile(r"<%#[^\n]*?%>")  # ERB's comment on one line: renders nothing
_ANY_ERB = re.compile(r"<%.*?%>|<%.*$", re.MULTILINE)


def translate_erb(path: Path, text: str) -> str:
    """`text` with each environment read in ERB turned into ``${...}``; ConfigError naming the
    file and line for any other ERB."""
    if "<%" not in text:
        return text
    translated = _ENV_READ.sub(_interpolation, _COMMENT.sub("", text))
    leftover = _ANY_ERB.search(translated)
    if leftover is not None:
        line = translated.count("\n", 0, leftover.start()) + 1
        snippet = leftover.group(0)
        raise ConfigError(
            f"{path}:{line}: ERB {snippet!r} is not understood: jobkit does not run Ruby. It "
            "reads <%= ENV['X'] %> and <%= ENV.fetch('X', default) %>; for anything else "
            "write the value, or ${X:-default} to read the environment variable X")
    return translated


def _interpolation(match: re.Match[str]) -> str:
    name = match.group("indexed") or match.group("fetched")
    default = next((match.group(g) for g in ("default", "block", "either", "otherwise")
                    if match.group(g) is not None), None)
    if default is None:
        return f"${{{name}}}"
    if default == "nil":
        default = ""
    elif default[0] in "'\"":
        default = default[1:-1]
    return f"${{{name}:-{default}}}"
