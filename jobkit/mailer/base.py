"""Action Mailer in Python: mailer classes whose actions build mail lazily.

    class UserMailer(ApplicationMailer):
        def welcome(self, user):
            self.user = user                      # visible to the templates
            return self.mail(to=user.email, subject="Welcome")

    UserMailer.welcome(user).deliver_later()      # nothing is rendered until delivery
    UserMailer.with_(user=user).welcome()         # parameterized: self.params["user"]

Every public method a Mailer subclass defines is an action: called on the class it returns a
MessageDelivery, which renders only when `.message`, `deliver_now` or `deliver_later` needs it
(`deliver_later` renders once in the caller to refuse bad input, and the worker renders again).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from typing import Any, ClassVar

import jinja2

from jobkit.imports import class_path, require_importable
from jobkit.mailer.attachments import Attachments
from jobkit.mailer.errors import TemplateError, TemplateMissingError
from jobkit.mailer.message import build_message
from jobkit.mailer.rendering import render_parts, template_dirs

__all__ = ["Mailer", "MessageDelivery"]

Addresses = str | Iterable[str] | None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Action:
    """An action: on the class, a MessageDelivery factory; on an instance, the method."""

    def __init__(self, name: str, function: Callable) -> None:
        self.name = name
        self.function = function
        self.signature = inspect.signature(function)
        # typeshed wants a callable wrapper; update_wrapper only copies attributes (name,
        # doc, __wrapped__), which this descriptor takes as well.
        functools.update_wrapper(self, function)  # pyright: ignore[reportArgumentType]

    def __get__(self, obj: Any, owner: type[Mailer]) -> Callable:
        if obj is not None:
            return self.function.__get__(obj, owner)
        return functools.partial(owner._delivery, self.name, {})


class Mailer:
    """Base class of mailers. Class options: `default` (headers merged along the class tree:
    "from", "reply_to", "cc", "bcc", any other header), `layout` (templates/layouts/<name>)."""

    default: ClassVar[dict[str, Any]] = {}
    layout: ClassVar[str | None] = "mailer"
    _actions: ClassVar[dict[str, _Action]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        actions = dict(cls._actions)
        for name, attr in list(vars(cls).items()):
            if name.startswith("_") or not inspect.isfunction(attr) or hasattr(Mailer, name):
                continue
            actions[name] = _Action(name, attr)
            setattr(cls, name, actions[name])
        cls._actions = actions

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = dict(params or {})
        self.attachments = Attachments()
        self.message: EmailMessage | None = None
        self.action_name: str | None = None

    @classmethod
    def mailer_name(cls) -> str:
        """The template folder name: UserMailer -> user_mailer."""
        return _snake(cls.__name__)

    @classmethod
    def with_(cls, **params: Any) -> _Parameterized:
        """Parameterized mailer (Action Mailer's `with`): actions read `self.params`."""
        return _Parameterized(cls, params)

    @classmethod
    def action_names(cls) -> list[str]:
        return list(cls._actions)

    @classmethod
    def _delivery(cls, action: str, params: dict[str, Any], *args: Any, **kwargs: Any
                  ) -> MessageDelivery:
        try:
            cls._actions[action].signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}.{action}(): {exc}") from None
        return MessageDelivery(cls, action, list(args), kwargs, params)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(getattr(klass, "default", {}) or {})
        return merged

    def mail(self, *, to: Addresses = None, subject: str | None = None, from_: Addresses = None,
             cc: Addresses = None, bcc: Addresses = None, reply_to: Addresses = None,
             headers: dict[str, str] | None = None, template_name: str | None = None,
             body: str | None = None, html_body: str | None = None) -> EmailMessage:
        """Build this action's message from the templates (or `body` / `html_body`)."""
        defaults = self.defaults()
        template = f"{self.mailer_name()}/{template_name or self.action_name}"
        if body is not None or html_body is not None:
            parts = {k: v for k, v in (("txt", body), ("html", html_body)) if v is not None}
        else:
            try:
                parts = render_parts(type(self), template, self.layout,
                                     self._template_context())
            except jinja2.TemplateError as exc:
                raise TemplateError(f"{template}: {type(exc).__name__}: {exc}") from exc
        if not parts:
            looked = ", ".join(template_dirs(type(self))) or "(no templates folder found)"
            raise TemplateMissingError(f"no template {template}.txt.j2 or {template}.html.j2 "
                                       f"for {type(self).__name__}.{self.action_name} in {looked}")
        standard = {"From": from_ or defaults.get("from"), "To": to,
                    "Cc": cc or defaults.get("cc"), "Bcc": bcc or defaults.get("bcc"),
                    "Reply-To": reply_to or defaults.get("reply_to"), "Subject": subject}
        extra = {k: v for k, v in defaults.items() if k not in ("from", "cc", "bcc", "reply_to")}
        self.message = build_message({**standard, **extra, **(headers or {})}, parts,
                                     self.attachments)
        return self.message

    def _template_context(self) -> dict[str, Any]:
        context = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {**context, "mailer": self}

    def process(self, action: str, *args: Any, **kwargs: Any) -> EmailMessage | None:
        """Run an action; the message it built with mail(), or None if it built none."""
        self.action_name = action
        getattr(self, action)(*args, **kwargs)
        return self.message


class _Parameterized:
    def __init__(self, mailer_class: type[Mailer], params: dict[str, Any]) -> None:
        self.mailer_class = mailer_class
        self.params = params

    def __getattr__(self, action: str) -> Callable[..., MessageDelivery]:
        if action not in self.mailer_class._actions:
            raise AttributeError(f"{self.mailer_class.__name__} has no action {action!r}")
        return functools.partial(self.mailer_class._delivery, action, self.params)


class MessageDelivery:
    """A mail not built yet: `.message`, `deliver_now()`, `deliver_later(...)`."""

    def __init__(self, mailer_class: type[Mailer], action: str, args: list, kwargs: dict,
                 params: dict[str, Any]) -> None:
        self.mailer_class = mailer_class
        self.action = action
        self.args = args
        self.kwargs = kwargs
        self.params = params
        self._message: EmailMessage | None = None
        self._processed = False

    def __repr__(self) -> str:
        return f"<MessageDelivery {self.mailer_class.__name__}.{self.action}>"

    @property
    def message(self) -> EmailMessage | None:
        """The built message (rendered once, on first use); None if the action sent none."""
        if not self._processed:
            mailer = self.mailer_class(self.params)
            self._message = mailer.process(self.action, *self.args, **self.kwargs)
            self._processed = True
        return self._message

    def deliver_now(self) -> EmailMessage | None:
        """Build and deliver in this process, through interceptors and observers."""
        from jobkit.mailer.delivery import deliver

        message = self.message
        if message is not None:
            deliver(message)
        return message

    def deliver_later(self, *, wait: Any = None, wait_until: Any = None, queue: str | None = None,
                      priority: int | None = None) -> Any:
        """Check the mail builds (bad input raises here, nothing enqueued), then enqueue a
        MailDeliveryJob with the mailer, action and arguments, not the rendered mail."""
        from jobkit.mailer.job import MailDeliveryJob

        require_importable(self.mailer_class, "mailer")
        if self.message is None:
            return None
        return MailDeliveryJob.set(wait=wait, wait_until=wait_until, queue=queue,
                                   priority=priority).perform_later(
            class_path(self.mailer_class), self.action,
            self.args, self.kwargs, self.params)


