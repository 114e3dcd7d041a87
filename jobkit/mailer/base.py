"""Action Mailer in Python: mailer classes whose actions build mail lazily.

    class UserMailer(ApplicationMailer):
        def welcome(self, user):
            self.user = user                      # visible to the templates
            return self.mail(to=user.email, subject="Welcome")

    UserMailer.welcome(user).deliver_later()      # nothing is rendered until delivery
    UserMailer.with_(user=user).welcome()         # parameterized: self.params["user"]

Every public method a Mailer subclass defines is an action: called on the class it returns a
MessageDelivery, which renders only when `.message`, `deliver_now` or `deliver_later` needs it
(`deliver_later` renders in the caller to refuse bad input, and the worker sends what it built:
jobkit.mailer.rendered says when the worker renders again).
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
from jobkit.mailer import callbacks, i18n, options, rendered, urls
from jobkit.mailer.attachments import Attachments
from jobkit.mailer.errors import TemplateError, TemplateMissingError
from jobkit.mailer.message import HeaderValues, build_message
from jobkit.mailer.rendering import render_parts, template_dirs

__all__ = ["Mailer", "MessageDelivery", "deliver_all_later"]

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
    "from", "reply_to", "cc", "bcc", any other header), `layout` (templates/layouts/<name>),
    `delivery_method` (overrides the configured one, except `test`), `delivery_job` (a
    MailDeliveryJob subclass), `deliver_later_queue_name` (default: the job's queue),
    `default_url_options` (host, protocol, port for `url()`, over the setting's)."""

    default: ClassVar[dict[str, Any]] = {}
    layout: ClassVar[str | None] = "mailer"
    delivery_method: ClassVar[str | None] = None
    delivery_job: ClassVar[type | None] = None
    deliver_later_queue_name: ClassVar[str | None] = None
    default_url_options: ClassVar[dict[str, Any]] = {}
    _actions: ClassVar[dict[str, _Action]] = {}
    _callbacks: ClassVar[dict[str, list[str]]] = {}
    _rescue_handlers: ClassVar[callbacks.Handlers] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        actions = dict(cls._actions)
        for name, attr in list(vars(cls).items()):
            if (name.startswith("_") or not inspect.isfunction(attr) or hasattr(Mailer, name)
                    or callbacks.is_marked(attr)):
                continue
            actions[name] = _Action(name, attr)
            setattr(cls, name, actions[name])
        cls._actions = actions
        cls._callbacks, cls._rescue_handlers = callbacks.collect(cls)
        options.check_class_options(cls)
        urls.check_class_options(cls)

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = dict(params or {})
        self.attachments = Attachments()
        self.message: EmailMessage | None = None
        self.action_name: str | None = None
        #: Set to False (e.g. in an after_action) to build the mail but not deliver it.
        self.perform_deliveries = True

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
        """Build this action's message from the templates (or `body` / `html_body`), in the
        current locale (jobkit.mailer.i18n); no `subject`: `default_i18n_subject()`."""
        defaults = self.defaults()
        template = f"{self.mailer_name()}/{template_name or self.action_name}"
        if body is not None or html_body is not None:
            parts = {k: v for k, v in (("txt", body), ("html", html_body)) if v is not None}
        else:
            try:
                parts = render_parts(type(self), template, self.layout,
                                     self._template_context(),
                                     i18n.fallbacks(i18n.current_locale()))
            except jinja2.TemplateError as exc:
                raise TemplateError(f"{template}: {type(exc).__name__}: {exc}") from exc
        if not parts:
            looked = ", ".join(template_dirs(type(self))) or "(no templates folder found)"
            raise TemplateMissingError(f"no template {template}.txt.j2 or {template}.html.j2 "
                                       f"for {type(self).__name__}.{self.action_name} in {looked}")
        # One value a header, whatever the case of its name: headers= over mail()'s
        # arguments over `default`; no subject at all: the translated default.
        merged = HeaderValues(defaults)
        merged.update({"From": from_, "To": to, "Cc": cc, "Bcc": bcc, "Reply-To": reply_to},
                      skip_empty=True)
        if subject is not None:
            merged["Subject"] = subject
        merged.update(headers or {})
        if "Subject" not in merged:
            merged["Subject"] = self.default_i18n_subject()
        self.message = build_message(merged, parts, self.attachments)
        return self.message

    def url(self, path: str = "/", **query: Any) -> str:
        """An absolute URL for a link in the mail (also `url(...)` in templates), from
        `default_url_options`: ``self.url("/users/5", ref="mail")``."""
        return urls.build_url(urls.options_for(type(self)), path, query,
                              f"{type(self).__name__}.{self.action_name}")

    def default_i18n_subject(self, **values: Any) -> str:
        """The catalog's `<mailer_name>.<action>.subject` in the current locale, formatted
        with `values` (``"Welcome, {name}"``), else the action's name (``Password reset``)."""
        return i18n.default_subject(self.mailer_name(), self.action_name or "", values)

    def _template_context(self) -> dict[str, Any]:
        context = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"url": self.url, **i18n.template_callables(), **context, "mailer": self}

    def process(self, action: str, *args: Any, **kwargs: Any) -> EmailMessage | None:
        """Run an action inside its callbacks; the message it built with mail(), or None if
        it built none, a callback aborted or a rescue_from handler took its error."""
        self.action_name = action
        if not callbacks.run(self, "action", lambda: getattr(self, action)(*args, **kwargs)):
            return None
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
        self._mailer: Mailer | None = None
        self._processed = False

    def __repr__(self) -> str:
        return f"<MessageDelivery {self.mailer_class.__name__}.{self.action}>"

    @property
    def message(self) -> EmailMessage | None:
        """The built message (rendered once, on first use); None if the action sent none."""
        if not self._processed:
            self._mailer = self.mailer_class(self.params)
            self._message = self._mailer.process(self.action, *self.args, **self.kwargs)
            self._processed = True
        return self._message

    def _will_deliver(self) -> bool:
        return self.message is not None and self._mailer is not None \
            and self._mailer.perform_deliveries

    def deliver_now(self, on_sent: Callable[[], None] | None = None) -> EmailMessage | None:
        """Build and deliver in this process, inside the deliver callbacks, through
        interceptors and observers (`on_sent`: see jobkit.mailer.delivery.deliver)."""
        from jobkit.mailer.delivery import deliver

        message, mailer = self.message, self._mailer
        if message is None or mailer is None or not self._will_deliver():
            return message
        method = options.delivery_method_for(self.mailer_class)
        callbacks.run(mailer, "deliver", lambda: deliver(message, on_sent=on_sent,
                                                         method=method))
        return message

    def deliver_later(self, *, wait: Any = None, wait_until: Any = None, queue: str | None = None,
                      priority: int | None = None) -> Any:
        """Check the mail builds (bad input raises here, nothing enqueued), then enqueue the
        mailer's delivery job (MailDeliveryJob) with the mailer, action and arguments and,
        unless the worker must render it (jobkit.mailer.rendered), the rendered mail; None
        when there is nothing to deliver. Inside a database transaction the job is sent once
        it commits (the delivery job's `enqueue_after_transaction_commit`, jobkit.transactions):
        the mail is built now, in the transaction."""
        job = self._job(wait=wait, wait_until=wait_until, queue=queue, priority=priority)
        return None if job is None else job.enqueue()

    def _job(self, **enqueue_options: Any) -> Any:
        """The delivery job, options applied, not enqueued; None if nothing to deliver."""
        require_importable(self.mailer_class, "mailer")
        if not self._will_deliver():
            return None
        job_class = options.delivery_job_for(self.mailer_class)
        message = self.message
        assert message is not None  # _will_deliver checked
        # The caller's with_locale: a worker that renders the mail again renders in it too.
        locale = i18n.chosen_locale() if rendered.accepts(job_class, "locale") else None
        job = job_class(class_path(self.mailer_class), self.action, self.args, self.kwargs,
                        self.params, **({"locale": locale} if locale else {}))
        packed = rendered.pack(self.mailer_class, message, job.job_id) \
            if rendered.accepts(job_class) else None
        if packed:
            job.kwargs["rendered"] = packed
        queue = enqueue_options.pop("queue") or self.mailer_class.deliver_later_queue_name
        return job.set(queue=queue, **enqueue_options)


def deliver_all_later(deliveries: Iterable[MessageDelivery], *, wait: Any = None,
                      wait_until: Any = None, queue: str | None = None,
                      priority: int | None = None) -> list[Any]:
    """Enqueue many mails in one round trip (jobkit.perform_all_later), each built first as
    `deliver_later` does; the jobs enqueued (mails with nothing to deliver are left out).
    Inside a database transaction, those whose class waits for the commit are sent after it,
    together (jobkit.transactions)."""
    from jobkit.job import perform_all_later

    jobs = [job for delivery in deliveries
            if (job := delivery._job(wait=wait, wait_until=wait_until, queue=queue,
                                     priority=priority)) is not None]
    return perform_all_later(jobs)


