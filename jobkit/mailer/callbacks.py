"""Action Mailer's callbacks and `rescue_from`, on jobkit's callback machinery.

    class UserMailer(ApplicationMailer):
        @before_action
        def load_user(self): self.user = User.find(self.params["user_id"])

        @after_action
        def tag(self): self.message["X-Campaign"] = "welcome"

        @rescue_from(PermanentDeliveryError)
        def bounced(self, error): self.params["user"].mark_bouncing()

The `action` callbacks run around the action (which builds the mail with `mail()`), the
`deliver` callbacks around handing the built mail to the delivery method. Ordering, `Abort`
and `around_*(self, proceed)` work as for jobs (jobkit.callbacks): a `before_action` that
raises `jobkit.Abort` stops the mail (the action does not run, nothing is delivered or
enqueued); a `before_deliver` that does stops that delivery.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from jobkit import callbacks
from jobkit.errors import JobClassError

__all__ = [
    "after_action",
    "after_deliver",
    "around_action",
    "around_deliver",
    "before_action",
    "before_deliver",
    "rescue_from",
]

EVENTS = ("action", "deliver")

before_action = callbacks.marker("before", "action")
around_action = callbacks.marker("around", "action")
after_action = callbacks.marker("after", "action")
before_deliver = callbacks.marker("before", "deliver")
around_deliver = callbacks.marker("around", "deliver")
after_deliver = callbacks.marker("after", "deliver")

F = TypeVar("F", bound=Callable[..., Any])
_RESCUES = "_jobkit_rescue_from"

#: (errors handled, handler method name), in the order the class tree declared them.
Handlers = list[tuple[tuple[type[Exception], ...], str]]


def rescue_from(*errors: type[Exception]) -> Callable[[F], F]:
    """Make the decorated method, `handler(self, error)`, handle these errors raised by the
    action, its callbacks or the delivery (on the worker too: a handled error is not retried).
    As in Rails the handler declared last (subclass before parent) is tried first."""
    if not errors or not all(isinstance(e, type) and issubclass(e, Exception) for e in errors):
        raise TypeError(f"rescue_from takes Exception subclasses, got {errors!r}")

    def mark(method: F) -> F:
        setattr(method, _RESCUES, errors)
        return method

    return mark


def is_marked(attr: Any) -> bool:
    """Whether a class attribute is a callback or a handler (so not an action)."""
    return callbacks.slot_of(attr) is not None or hasattr(attr, _RESCUES)


def collect(cls: type) -> tuple[dict[str, list[str]], Handlers]:
    """A mailer class's callbacks by slot and its rescue handlers; refuses bad ones."""
    handlers: dict[str, tuple[type[Exception], ...]] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            errors = getattr(attr, _RESCUES, None)
            if errors is not None:
                if inspect.iscoroutinefunction(attr):
                    raise JobClassError(f"{klass.__qualname__}.{name}: a rescue_from handler "
                                        "must be a plain method (`def`), not `async def`")
                handlers.pop(name, None)  # redefined: it moves to the end (tried first)
                handlers[name] = errors
    return callbacks.collect(cls, EVENTS), [(errors, name) for name, errors in handlers.items()]


def rescue(mailer: Any, error: Exception) -> bool:
    """Hand `error` to the mailer's handler for it; False when it has none."""
    for errors, name in reversed(type(mailer)._rescue_handlers):
        if isinstance(error, errors):
            getattr(mailer, name)(error)
            return True
    return False


def run(mailer: Any, event: str, body: Callable[[], Any]) -> bool:
    """Run `body` inside the mailer's callbacks for `event`, errors going to its handlers;
    whether the chain completed (no Abort, no handled error)."""
    try:
        completed, _ = callbacks.run_callbacks(mailer, event, body)
    except Exception as error:
        if not rescue(mailer, error):
            raise
        return False
    return completed
