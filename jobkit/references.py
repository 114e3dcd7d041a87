"""GlobalID-style references to database records: ``gid://<app>/<Model>/<pk>``.

A job argument that is a model instance crosses the wire as a reference, and the worker loads
the record again at perform time, as Rails' GlobalID does: the job sees fresh data, and the
payload stays small. Locators know one ORM each; register the ones your app uses.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from jobkit.errors import DeserializationError, JobClassError, SerializationError
from jobkit.imports import class_path, import_object

__all__ = [
    "DjangoLocator",
    "GlobalID",
    "Locator",
    "SQLAlchemyLocator",
    "app_name",
    "locate",
    "register_locator",
    "release_all",
    "to_global_id",
]

_APP_NAME_DEFAULT = "app"


def app_name() -> str:
    """The `<app>` part of every reference this process writes (``JOBKIT_APP``, default 'app')."""
    return os.environ.get("JOBKIT_APP", _APP_NAME_DEFAULT)


@dataclass(frozen=True)
class GlobalID:
    """A parsed ``gid://app/Model/pk`` URI; `model_id` may hold several comma-joined keys."""

    app: str
    model: str
    model_id: tuple[str, ...]

    @property
    def uri(self) -> str:
        ids = ",".join(quote(part, safe="") for part in self.model_id)
        return f"gid://{quote(self.app, safe='')}/{quote(self.model, safe='.')}/{ids}"

    @classmethod
    def parse(cls, uri: str) -> GlobalID:
        if not isinstance(uri, str) or not uri.startswith("gid://"):
            raise ValueError(f"not a global id: {uri!r}")
        parts = uri[len("gid://"):].split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"not a global id (want gid://app/Model/id): {uri!r}")
        app, model, ids = parts
        return cls(unquote(app), unquote(model), tuple(unquote(p) for p in ids.split(",")))

    def __str__(self) -> str:
        return self.uri


class Locator:
    """One ORM's way to name a record and find it again. Override the three verbs."""

    def model_name(self, obj: Any) -> str | None:
        """The reference's Model part for `obj`, or None when this locator does not know it."""
        return None

    def primary_key(self, obj: Any) -> tuple[Any, ...]:
        """The record's primary key values, in order."""
        raise NotImplementedError

    def find(self, model: str, model_id: tuple[str, ...]) -> Any:
        """The record, None if it is gone; raise LookupError if `model` is not this locator's."""
        raise NotImplementedError

    def release(self) -> None:
        """Called after each perform: give back sessions opened by `find`."""


class SQLAlchemyLocator(Locator):
    """SQLAlchemy models, named by import path (``gid://app/myapp.models.User/42``).

    `session` is a Session, a scoped_session or a sessionmaker. A scoped_session is removed and
    a sessionmaker's session closed after each perform, as a web request would do. With several
    databases, register one locator per database and pass `base` (the declarative base or a
    model class) so each locator only answers for its own models.
    """

    def __init__(self, session: Any, base: type | None = None) -> None:
        from sqlalchemy.orm import Session, scoped_session

        self._session = session
        self._base = base
        self._scoped = isinstance(session, scoped_session)
        self._shared = isinstance(session, Session)
        self._local = threading.local()

    def model_name(self, obj: Any) -> str | None:
        from sqlalchemy import inspect

        state = inspect(obj, raiseerr=False)
        if state is None or not hasattr(state, "mapper") or not self._owns(type(obj)):
            return None
        return class_path(type(obj))

    def _owns(self, cls: Any) -> bool:
        return self._base is None or (isinstance(cls, type) and issubclass(cls, self._base))

    def primary_key(self, obj: Any) -> tuple[Any, ...]:
        from sqlalchemy import inspect

        state = inspect(obj)
        key = state.identity or state.mapper.primary_key_from_instance(obj)
        return tuple(key)

    def find(self, model: str, model_id: tuple[str, ...]) -> Any:
        from sqlalchemy import inspect

        try:
            cls = import_object(model, "model")
        except JobClassError as exc:
            raise LookupError(model) from exc
        mapper = inspect(cls, raiseerr=False)
        if mapper is None or not hasattr(mapper, "primary_key") or not self._owns(cls):
            raise LookupError(model)
        columns = mapper.primary_key
        if len(columns) != len(model_id):
            raise DeserializationError(model, f"expected {len(columns)} key values")
        pairs = zip(columns, model_id, strict=True)
        key = tuple(_cast(col.type.python_type, raw) for col, raw in pairs)
        return self._session_now().get(cls, key[0] if len(key) == 1 else key)

    def _session_now(self) -> Any:
        if self._shared or self._scoped:
            return self._session
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._session()
        return session

    def release(self) -> None:
        if self._scoped:
            self._session.remove()
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None


def _cast(python_type: type, raw: str) -> Any:
    return raw if python_type is str else python_type(raw)


class DjangoLocator(Locator):
    """Django models, named ``app_label.ModelName`` (``gid://app/blog.Post/42``)."""

    def model_name(self, obj: Any) -> str | None:
        try:
            from django.db.models import Model
        except ImportError:
            return None
        if not isinstance(obj, Model):
            return None
        return obj._meta.label  # pyright: ignore[reportAttributeAccessIssue]  # set by Django's metaclass

    def primary_key(self, obj: Any) -> tuple[Any, ...]:
        return (obj.pk,)

    def find(self, model: str, model_id: tuple[str, ...]) -> Any:
        try:
            from django.apps import apps

            cls = apps.get_model(model)
        except Exception as exc:  # not installed, not set up, or not a Django model name
            raise LookupError(model) from exc
        return cls._default_manager.filter(pk=model_id[0]).first()


_locators: list[Locator] = []


def register_locator(locator: Locator) -> Locator:
    """Add a locator; later registrations are asked first."""
    _locators.insert(0, locator)
    return locator


def _all_locators() -> list[Locator]:
    return [*_locators, _DJANGO]


_DJANGO = DjangoLocator()


def to_global_id(obj: Any, path: str = "value") -> GlobalID | None:
    """The reference for a model instance, or None when no locator knows its type."""
    for locator in _all_locators():
        model = locator.model_name(obj)
        if model is None:
            continue
        key = locator.primary_key(obj)
        if not key or any(part is None for part in key):
            reason = f"{type(obj).__name__} has no primary key yet (unsaved?)"
            raise SerializationError(path, reason)
        return GlobalID(app_name(), model, tuple(str(part) for part in key))
    return None


def locate(uri: str, path: str = "value") -> Any:
    """Load the record a reference names; DeserializationError when it is gone or unknown."""
    try:
        gid = GlobalID.parse(uri)
    except ValueError as exc:
        raise DeserializationError(path, str(exc)) from None
    if gid.app != app_name():
        raise DeserializationError(path, f"{uri}: written by app {gid.app!r}, this is app "
                                         f"{app_name()!r} (JOBKIT_APP)")
    for attempt in range(2):
        for locator in _all_locators():
            try:
                record = locator.find(gid.model, gid.model_id)
            except LookupError:
                continue
            if record is None:
                raise DeserializationError(path, f"{uri}: record not found (deleted?)")
            return record
        if attempt == 0 and not _import_model_module(gid.model):
            break
    raise DeserializationError(path, f"{uri}: no registered locator knows model {gid.model!r}")


def _import_model_module(model: str) -> bool:
    """Import the module a model path names, so a locator it registers (as app code usually
    does beside its models) exists in a worker that never imported it. True if it imported."""
    module_name = model.rpartition(".")[0]
    if not module_name:
        return False
    try:
        importlib.import_module(module_name)
    except ImportError:
        return False
    return True


def release_all() -> None:
    """Give back every locator's per-job resources."""
    for locator in _all_locators():
        locator.release()


