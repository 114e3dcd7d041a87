"""Active Job's callbacks: before/around/after enqueue and perform.

Mark methods of a Job subclass with the decorators below. Callbacks run parents first, in the
order they are defined; a subclass that redefines a method by name replaces it. `before_*` and
`around_*` may raise `jobkit.Abort` to stop the chain; `after_*` run only when the chain
completed. An `around_*` callback takes the job and `proceed`, and must call `proceed()`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from jobkit.errors import Abort, JobClassError

__all__ = [
    "after_enqueue",
    "after_perform",
    "around_enqueue",
    "around_perform",
    "before_enqueue",
    "before_perform",
    "run_callbacks",
]

EVENTS = ("enqueue", "perform")
KINDS = ("before", "around", "after")
_ATTR = "_jobkit_callback"


def marker(kind: str, event: str) -> Callable[[Callable], Callable]:
    """The decorator that puts a method in the `<kind>_<event>` slot (mailers add events)."""

    def mark(method: Callable) -> Callable:
        setattr(method, _ATTR, f"{kind}_{event}")
        return method

    mark.__name__ = f"{kind}_{event}"
    mark.__doc__ = f"Run the decorated method {kind} each {event}."
    return mark


def slot_of(attr: Any) -> str | None:
    """The `<kind>_<event>` slot a decorator put a method in, or None."""
    return getattr(attr, _ATTR, None)


before_enqueue = marker("before", "enqueue")
around_enqueue = marker("around", "enqueue")
after_enqueue = marker("after", "enqueue")
before_perform = marker("before", "perform")
around_perform = marker("around", "perform")
after_perform = marker("after", "perform")


def collect(cls: type, events: tuple[str, ...] = EVENTS) -> dict[str, list[str]]:
    """Callback method names per `<kind>_<event>`, parents first, for a class whose callbacks
    are for `events` (a decorator for another event is refused).

    Callbacks are registered by name, as in Rails: a subclass that redefines a callback method
    without a decorator keeps it in its slot (its own version runs); with another decorator,
    the method moves to that slot.
    """
    names: dict[str, list[str]] = {f"{k}_{e}": [] for k in KINDS for e in events}
    slots: dict[str, str] = {}  # method name -> slot, in first-definition order
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            slot = slot_of(attr)
            if slot is not None:
                if inspect.iscoroutinefunction(attr):  # its coroutine would never be awaited
                    raise JobClassError(f"{klass.__qualname__}.{name}: a {slot} callback "
                                        "must be a plain method (`def`), not `async def`")
                if slot not in names:
                    raise JobClassError(f"{klass.__qualname__}.{name}: {slot} is not a "
                                        f"callback of this kind of class (it has "
                                        f"{', '.join(names)})")
                slots[name] = slot
    for name, slot in slots.items():
        names[slot].append(name)
    return names


def run_callbacks(job: Any, event: str, body: Callable[[], Any]) -> tuple[bool, Any]:
    """Run `body` inside the job's callbacks for `event`; (completed, body's result).

    `completed` is False when a callback raised Abort or an around callback did not proceed.
    """
    chain = type(job)._callbacks
    result: list[Any] = []

    def innermost() -> None:
        try:
            result.append(body())
        except Abort as exc:  # Abort is for callbacks; from the body it is a plain error
            raise _AbortFromBody(exc) from exc

    try:
        for name in chain[f"before_{event}"]:
            getattr(job, name)()
        _around(job, chain[f"around_{event}"], innermost)
    except Abort:
        return False, None
    except _AbortFromBody as wrapped:
        raise wrapped.abort from None
    if not result:
        return False, None
    for name in reversed(chain[f"after_{event}"]):
        getattr(job, name)()
    return True, result[0]


class _AbortFromBody(Exception):
    """Carries an Abort raised by perform() itself past the callbacks' Abort handling."""

    def __init__(self, abort: Abort) -> None:
        super().__init__(abort)
        self.abort = abort


def _around(job: Any, names: list[str], innermost: Callable[[], None]) -> None:
    call = innermost
    for name in reversed(names):
        call = _wrap(getattr(job, name), call)
    call()


def _wrap(around: Callable[[Callable], Any], inner: Callable[[], None]) -> Callable[[], None]:
    return lambda: around(inner)
