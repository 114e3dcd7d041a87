"""Enqueue after the transaction commits (Active Job's `enqueue_after_transaction_commit`).

A job enqueued while the caller's database transaction is open is held until that transaction
commits: a rollback drops it, and a worker never sees it before the data it needs. Two kinds
of transaction are seen: a Django `atomic` block (held with Django's own `on_commit`, which
already drops what a rolled-back savepoint registered), and the transaction of an SQLAlchemy
session that `watch` was given (its session events; savepoints handled here). Outside a
transaction, or for a class that says no, a job is sent at once as before.

An SQLAlchemy `Session` begins a transaction on its own at its first query, so a session that
has only read holds nothing back: jobs are held when the transaction was begun explicitly
(`session.begin()`, `sessionmaker.begin()`, a savepoint) or has written (a flush, unflushed
changes, an ORM insert/update/delete). A held job whose send fails after the commit is logged
at ERROR on this module's logger with its traceback, and keeps the error in `enqueue_error`.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from jobkit.config import current_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, SessionTransaction

    from jobkit.job import Job

__all__ = ["held_jobs", "hold", "unwatch", "watch"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Send = Callable[[list[Any]], None]

_STATE = "jobkit_transactions"  # the key of a watched session's `info`
# The watched sessions with a transaction begun in this context (weak: a session dropped
# without closing is not kept alive by a job-less context).
_open: contextvars.ContextVar[tuple[weakref.ref[Session], ...]] = contextvars.ContextVar(
    "jobkit_open_sessions", default=())


@dataclass
class _SessionState:
    """What jobkit keeps in a watched session's `info` during its transaction."""

    wrote: bool = False
    committed: set[int] = field(default_factory=set)  # ids of transactions that committed
    held: dict[int, list[tuple[list[Any], Callable[[], None]]]] = field(default_factory=dict)


def watch(target: T) -> T:
    """Hold jobs enqueued during the transactions of these SQLAlchemy sessions: a
    `sessionmaker`, a `scoped_session`, a `Session` subclass (or `Session` itself, for every
    session) or one session. Returns `target`, so ``Session = watch(sessionmaker(engine))``
    reads well; watching twice is harmless."""
    from sqlalchemy import event

    _check_target(target)
    for name, listener in _LISTENERS.items():
        if not event.contains(target, name, listener):
            event.listen(target, name, listener)
    return target


def unwatch(target: Any) -> None:
    """Stop holding jobs for `target` (as given to `watch`)."""
    from sqlalchemy import event

    _check_target(target)
    for name, listener in _LISTENERS.items():
        if event.contains(target, name, listener):
            event.remove(target, name, listener)


def hold(jobs: Sequence[Job], send: Send) -> list[Job]:
    """The jobs held until the current transaction commits (then `send` gets them): those
    whose class (or the `enqueue_after_transaction_commit` setting) wants it, when a watched
    session or a Django `atomic` block has a transaction open here. The caller sends the
    others now."""
    if not jobs:
        return []
    default = current_settings().enqueue_after_transaction_commit
    wanted = [job for job in jobs if _wants(type(job), default)]
    if not wanted:
        return []
    register = _session_register() or _django_register()
    if register is None:
        return []
    for job in wanted:
        job.waiting_for_commit = True
    register(lambda: _send_held(wanted, send), wanted)
    return wanted


def held_jobs(session: Session) -> list[Job]:
    """The jobs a watched session holds until its transaction commits (for tests, logs)."""
    state = session.info.get(_STATE)
    if not isinstance(state, _SessionState):
        return []
    return [job for entries in state.held.values() for jobs, _ in entries for job in jobs]


def _wants(cls: type, default: bool) -> bool:
    own = getattr(cls, "enqueue_after_transaction_commit", None)
    return default if own is None else own


def _send_held(jobs: list[Job], send: Send) -> None:
    """Send held jobs after the commit. The commit stands whatever happens here, so an error
    is not raised into the code that committed: it is logged with its traceback and kept in
    each job not sent (`enqueue_error`)."""
    for job in jobs:
        job.waiting_for_commit = False
    try:
        send(jobs)
    except Exception as exc:
        refused = getattr(exc, "jobs", None)
        for job in jobs:
            if not job.successfully_enqueued and (refused is None or job in refused
                                                  or job.duplicate_of is None):
                job.enqueue_error = exc
        shown = ", ".join(f"{type(job).__qualname__} {job.job_id}" for job in jobs[:5])
        more = f" and {len(jobs) - 5} more" if len(jobs) > 5 else ""
        logger.error("jobkit: enqueue after the transaction committed failed for %s%s: %s",
                     shown, more, exc, exc_info=True)


def _drop(jobs: list[Job], why: str) -> None:
    for job in jobs:
        job.waiting_for_commit = False
    if jobs:
        logger.debug("jobkit: %d job(s) not enqueued: %s", len(jobs), why)


# -- SQLAlchemy sessions ------------------------------------------------------------------------

def _check_target(target: Any) -> None:
    from sqlalchemy.orm import Session, scoped_session, sessionmaker

    if isinstance(target, Session | sessionmaker | scoped_session) or (
            isinstance(target, type) and issubclass(target, Session)):
        return
    raise TypeError(f"jobkit.transactions.watch takes a sessionmaker, a scoped_session, a "
                    f"Session class or a Session, not {target!r} (jobkit watches sessions, "
                    f"not engines or connections)")


def _state(session: Session) -> _SessionState:
    state = session.info.get(_STATE)
    if not isinstance(state, _SessionState):
        state = session.info[_STATE] = _SessionState()
    return state


def _boundary(transaction: SessionTransaction | None) -> SessionTransaction | None:
    """The root or savepoint a transaction belongs to (flush subtransactions hold nothing)."""
    while transaction is not None and transaction.parent is not None \
            and not transaction.nested:
        transaction = transaction.parent
    return transaction


def _session_register() -> Callable[[Callable[[], None], list[Job]], None] | None:
    """How to hold jobs in the newest watched session of this context whose transaction is
    explicit or has written; None when there is none."""
    from sqlalchemy.orm import SessionTransactionOrigin

    for ref in reversed(_open.get()):
        session = ref()
        root = session.get_transaction() if session is not None else None
        if session is None or root is None:
            continue
        nested = session.get_nested_transaction()
        state = _state(session)
        if not (nested is not None or root.origin is SessionTransactionOrigin.BEGIN
                or state.wrote or session.new or session.dirty or session.deleted):
            continue
        target = nested if nested is not None else root
        entries = state.held.setdefault(id(target), [])

        def register(run: Callable[[], None], jobs: list[Job],
                     entries: list[tuple[list[Any], Callable[[], None]]] = entries) -> None:
            entries.append((jobs, run))

        return register
    return None


def _after_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        alive = tuple(r for r in _open.get() if r() is not None and r() is not session)
        _open.set((*alive, weakref.ref(session)))


def _after_flush(session: Session, flush_context: Any) -> None:
    _state(session).wrote = True


def _do_orm_execute(execute_state: Any) -> None:
    if execute_state.is_insert or execute_state.is_update or execute_state.is_delete:
        _state(execute_state.session).wrote = True


def _after_commit(session: Session) -> None:
    """Called for the root and for each savepoint released, before it closes: the one
    committing is the innermost savepoint, else the root."""
    committing = session.get_nested_transaction() or session.get_transaction()
    if committing is not None:
        _state(session).committed.add(id(committing))


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    state = session.info.get(_STATE)
    if not isinstance(state, _SessionState):
        return
    key = id(transaction)
    entries = state.held.pop(key, [])
    committed = key in state.committed
    state.committed.discard(key)
    if transaction.parent is None:
        _open.set(tuple(r for r in _open.get() if r() is not None and r() is not session))
        session.info.pop(_STATE, None)  # a new transaction starts clean
        if committed:
            for _, run in entries:
                run()
        else:
            _drop([job for jobs, _ in entries for job in jobs], "the transaction rolled back")
        return
    if transaction.nested and not committed:
        _drop([job for jobs, _ in entries for job in jobs], "the savepoint rolled back")
        return
    parent = _boundary(transaction.parent)  # a released savepoint: its jobs go up a level
    if parent is not None and entries:
        state.held.setdefault(id(parent), []).extend(entries)


_LISTENERS: dict[str, Callable[..., None]] = {
    "after_transaction_create": _after_transaction_create,
    "after_transaction_end": _after_transaction_end,
    "after_commit": _after_commit,
    "after_flush": _after_flush,
    "do_orm_execute": _do_orm_execute,
}


# -- Django ----------------------------------------------------------------------------------

def _django_register() -> Callable[[Callable[[], None], list[Job]], None] | None:
    """`transaction.on_commit` on the first database in an `atomic` block in this thread;
    None when Django is not in use here or no atomic block is open."""
    if "django.db" not in sys.modules:
        return None
    from django.conf import settings

    if not settings.configured:
        return None
    from django.db import connections, transaction

    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            alias = connection.alias

            def register(run: Callable[[], None], jobs: list[Job], alias: str = alias) -> None:
                transaction.on_commit(run, using=alias, robust=True)

            return register
    return None
