"""Refuse a Job subclass's class attribute that looks like an option but is none.

``queue = "low"`` or ``max_retires = 1`` would otherwise be ignored without a word, and the job
would run on `default` with the default retries. As Dramatiq checks its actors' options, a
class is checked when it is defined: a public attribute holding data (or a lambda), unless its
name is in UPPER_CASE, must be an option some base class already has or declares, or be
declared by the class itself with an annotation (``tenant: ClassVar[str] = "acme"``). Methods,
properties and other descriptors, other callables, nested classes, UPPER_CASE constants and
``_private`` names are not options; but data cannot replace an inherited method
(``retry_in = 30``), and an option cannot hide in UPPER_CASE (``MAX_RETRIES = 3``).
"""

from __future__ import annotations

import difflib
import sys
import types
from typing import Any

from jobkit.errors import JobClassError

__all__ = ["check_class_options"]

# Names users bring from Sidekiq, Celery or Active Job, and what does that here.
_FAMILIAR_NAMES = {
    "queue": "queue_as",
    "queue_name": "queue_as",
    "queue_with_priority": "priority",
    "retry": "max_retries",
    "retries": "max_retries",
    "max_attempts": "max_retries",
    "attempts": "max_retries",
    "sidekiq_options": "the options queue_as, max_retries, dead, backtrace",
    "retry_backoff": "the retry_in method or @retry_on",
    "retry_jitter": "@retry_on(..., jitter=)",
    "default_retry_delay": "the retry_in method or @retry_on",
    "acks_late": "nothing: jobkit always acknowledges after the job ran",
    "unique": "unique_for",
    "unique_for_seconds": "unique_for",
    "lock": "unique_for",
    "concurrency": "limits_concurrency",
    "concurrency_limit": "limits_concurrency",
    "rate_limit": "limiter (jobkit.limiter)",
    "throttle": "limiter (jobkit.limiter) or debounce",
    "debounce_for": "debounce",
    "soft_time_limit": "time_limit",
    "timeout": "time_limit (soft) or hard_time_limit",
    "enqueue_after_commit": "enqueue_after_transaction_commit",
    "after_commit": "enqueue_after_transaction_commit",
    "on_commit": "enqueue_after_transaction_commit",
}
_NOT_LISTED = frozenset({"failure_rules"})  # set by @retry_on / @discard_on, not by hand
_SHOWN_CHARS = 60


def check_class_options(cls: type) -> None:
    """JobClassError naming the first attribute of `cls` that looks like an option none of
    its bases has or declares and that it does not declare with an annotation."""
    bases = cls.__mro__[1:]
    inherited = {name for base in bases for name in [*vars(base), *annotated_names(base)]}
    declared = annotated_names(cls)
    options = sorted(_options(bases))
    for name, value in vars(cls).items():
        problem = _problem(name, value, inherited, declared, options, bases)
        if problem:
            shown = repr(value)
            if len(shown) > _SHOWN_CHARS:
                shown = shown[:_SHOWN_CHARS] + "..."
            own = "" if name.upper() == name else ", or name it in UPPER_CASE or with a " \
                "leading underscore"
            raise JobClassError(
                f"{cls.__qualname__}.{name} = {shown} {problem}. The options: "
                f"{', '.join(o for o in options if o not in _NOT_LISTED)}. For a class "
                f"attribute of your own, declare it with an annotation (`{name}: ClassVar[...] "
                f"= ...`){own}.")


def _problem(name: str, value: Any, inherited: set[str], declared: set[str],
             options: list[str], bases: tuple[type, ...]) -> str | None:
    """Why `name = value` cannot stand, or None."""
    if name.startswith("_") or name in declared:
        return None
    if name.upper() == name:
        lower = name.lower()
        return f"is the option {lower} in capitals" if lower in options else None
    if name in inherited:
        replaced = next((vars(b)[name] for b in bases if name in vars(b)), None)
        if _is_method(replaced) and not callable(value) \
                and not hasattr(type(value), "__get__"):
            return "replaces a method of the same name with data"
        return None
    if not _looks_like_option(value):
        return None
    return f"is not a job option{_hint(name, options)}"


def annotated_names(cls: type) -> set[str]:
    """The names `cls` itself annotates, without evaluating the annotations (on Python 3.14,
    lazily evaluated annotations are not in the class's __dict__)."""
    if sys.version_info >= (3, 14):
        import annotationlib  # Python 3.14+

        return set(annotationlib.get_annotations(cls, format=annotationlib.Format.FORWARDREF))
    return set(vars(cls).get("__annotations__", {}))


def _looks_like_option(value: Any) -> bool:
    if isinstance(value, types.FunctionType):
        return value.__name__ == "<lambda>"  # `queue_as = lambda job: ...` is an option
    return not (callable(value) or hasattr(type(value), "__get__"))


def _is_method(value: Any) -> bool:
    return isinstance(value, types.FunctionType | classmethod | staticmethod) \
        and getattr(value, "__name__", "") != "<lambda>"


def _options(bases: tuple[type, ...]) -> set[str]:
    """The option names the bases define or declare (what a subclass may set)."""
    names: set[str] = set()
    for base in bases:
        names.update(n for n, v in vars(base).items()
                     if not n.startswith("_") and n.upper() != n and _looks_like_option(v))
        names.update(n for n in annotated_names(base) if not n.startswith("_")
                     and (n not in vars(base) or _looks_like_option(vars(base)[n])))
    return names


def _hint(name: str, options: list[str]) -> str:
    familiar = _FAMILIAR_NAMES.get(name)
    if familiar is None:
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        familiar = close[0] if close else None
    return f" (did you mean {familiar}?)" if familiar else ""
