"""Refuse a Job subclass's class attribute that looks like an option but is none.

``queue = "low"`` or ``max_retires = 1`` would otherwise be ignored without a word, and the job
would run on `default` with the default retries. As Dramatiq checks its actors' options, a
class is checked when it is defined: a public, lower-case attribute holding data (or a lambda)
must be an option some base class already has, or be declared by the class itself with an
annotation (``tenant: ClassVar[str] = "acme"``). Methods, properties and other descriptors,
nested classes, UPPER_CASE constants and ``_private`` names are never options.
"""

from __future__ import annotations

import difflib
import types
from typing import Any

from jobkit.errors import JobClassError

__all__ = ["check_class_options"]

# Names users bring from Sidekiq, Celery or Active Job, and what does that here.
_FAMILIAR_NAMES = {
    "queue": "queue_as",
    "queue_name": "queue_as",
    "retry": "max_retries",
    "retries": "max_retries",
    "max_attempts": "max_retries",
    "attempts": "max_retries",
    "sidekiq_options": "the options queue_as, max_retries, dead, backtrace",
    "retry_backoff": "the retry_in method or @retry_on",
    "default_retry_delay": "the retry_in method or @retry_on",
}


def check_class_options(cls: type) -> None:
    """JobClassError naming the first attribute of `cls` that looks like an option none of
    its bases has and that it does not declare with an annotation."""
    inherited = {name for base in cls.__mro__[1:] for name in vars(base)}
    declared = set(vars(cls).get("__annotations__", {}))
    for name, value in vars(cls).items():
        if name in inherited or name in declared or not _looks_like_option(name, value):
            continue
        options = sorted(_options(cls.__mro__[1:]))
        raise JobClassError(
            f"{cls.__qualname__}.{name} = {value!r} is not a job option{_hint(name, options)}. "
            f"The options: {', '.join(options)}. For a class attribute of your own, declare it "
            f"with an annotation (`{name}: ClassVar[...] = ...`), or name it in UPPER_CASE or "
            "with a leading underscore.")


def _looks_like_option(name: str, value: Any) -> bool:
    if name.startswith("_") or name.upper() == name:
        return False
    if isinstance(value, types.FunctionType):
        return value.__name__ == "<lambda>"  # `queue_as = lambda job: ...` is an option
    return not (isinstance(value, type) or hasattr(type(value), "__get__"))


def _options(bases: tuple[type, ...]) -> set[str]:
    """The option names the bases define or declare (what a subclass may set)."""
    names: set[str] = set()
    for base in bases:
        names.update(n for n, v in vars(base).items() if _looks_like_option(n, v))
        names.update(n for n in vars(base).get("__annotations__", {}) if not n.startswith("_"))
    return names


def _hint(name: str, options: list[str]) -> str:
    familiar = _FAMILIAR_NAMES.get(name)
    if familiar is None:
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        familiar = close[0] if close else None
    return f" (did you mean {familiar}?)" if familiar else ""
