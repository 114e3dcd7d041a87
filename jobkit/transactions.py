"""Enqueue after the transaction commits (Active Job's `enqueue_after_transaction_commit`).

A job enqueued while the caller's database transaction is open is held until that transaction
commits: a rollback drops it, and a worker never sees it before the data it needs. Two kinds
of transaction are seen: the `atomic` blocks of Django's databases (held with Django's own
`on_commit`, which already drops what a rolled-back savepoint registered; the blocks Django's
`TestCase` opens do not count), and the transaction of an SQLAlchemy session that `watch` was
given (its session events; savepoints handled here), found in the context that began it or
named with `holding`. Outside a transaction, or for a class that says no, a job is sent at once
as before. Nothing is imported here unless the caller's program already uses it: with no watched
session open and Django not set up, `hold` costs a few attribute reads.

An SQLAlchemy `Session` begins a transaction on its own at its first query, so a session that
has only read holds nothing back: jobs are held when the transaction was begun explicitly
(`session.begin()`, `sessionmaker.begin()`, a savepoint) or has written (a flush, unflushed
changes, an ORM insert/update/delete, any statement other than a read on its connection). A
held job whose send fails after the commit is logged at ERROR on this module's logger with its
traceback, and keeps the error in `enqueue_error`; a session garbage-collected while holding
jobs (dropped without commit or close) logs them at ERROR.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from jobkit.config import current_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session, SessionTransaction

    from jobkit.job import Job

__all__ = ["held_jobs", "hold", "holding", "reset", "unwatch", "watch"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S", bound="Session")
Send = Callable[[list[Any]], None]
Register = Callable[[Callable[[], None], list[Any]], None]
Entries = list[tuple[list[Any], Callable[[], None]]]

_STATE = "jobkit_transactions"  # the key of a watched session's `info`
# Statements taken as reads: a transaction that ran only these has not written. A CTE (WITH)
# counts as a read: taking a read for a write would hold jobs a read-only session then drops.
_READS = ("SELECT", "WITH", "SHOW", "EXPLAIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "PRAGMA",
          "SET ", "BEGIN", "COMMIT")


@dataclass
class _SessionState:
    """What jobkit keeps of a watched session's current root transaction."""

    explicit: bool = False  # begun with begin(), not by itself at a first query
    wrote: bool = False
    committed: set[int] = field(default_factory=set)  # ids of transactions that committed
    held: dict[int, Entries] = field(default_factory=dict)
    finalizer: weakref.finalize | None = None  # logs held jobs if the session is collected
    # Its connections in `_writers` (weak: a strong one there would keep the key alive).
    connections: list[weakref.ref[Connection]] = field(default_factory=list)


# The watched sessions with a transaction begun in this context, oldest first, with the state
# of that transaction (weak: a session dropped without closing is not kept alive by a context).
_open: contextvars.ContextVar[tuple[tuple[weakref.ref[Session], _SessionState], ...]] = \
    contextvars.ContextVar("jobkit_open_sessions", default=())
# The sessions named with `holding` in this context, innermost last.
_bound: contextvars.ContextVar[tuple[Session, ...]] = contextvars.ContextVar(
    "jobkit_bound_sessions", default=())
# The connections of transactions that began by themselves, and the engines listened to.
_writers: weakref.WeakKeyDictionary[Connection, _SessionState] = weakref.WeakKeyDictionary()
_engines: weakref.WeakSet[Any] = weakref.WeakSet()
_django_configured = False  # settings.configured, once seen True (it never goes back)


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
    """Stop holding jobs for `target` (as given to `watch`). A transaction open meanwhile is
    still followed to its end, so the jobs it holds are sent at its commit."""
    from sqlalchemy import event

    _check_target(target)
    for name, listener in _LISTENERS.items():
        if name not in _ENDS and event.contains(target, name, listener):
            event.remove(target, name, listener)
    # The listeners that end a transaction stay (they do nothing for a session jobkit keeps
    # nothing in), so one begun while watched still sends or drops what it holds.


@contextlib.contextmanager
def holding(session: S) -> Iterator[S]:
    """Hold the jobs enqueued inside this block in `session`'s transaction, whichever context
    began it: for frameworks that open the session in one context and run the code that
    enqueues in another (a FastAPI dependency, run in its own thread). The session must be
    watched; with no transaction open yet, one is begun (no database round trip)."""
    if not _is_watched(session):
        raise TypeError(f"jobkit.transactions.holding: {session!r} is not watched; call "
                        f"jobkit.transactions.watch on its sessionmaker (or the session) first")
    token = _bound.set((*_bound.get(), session))
    try:
        yield session
    finally:
        _bound.reset(token)


def reset() -> None:
    """Forget the sessions this context has seen begin (a worker calls it around each job, so
    a session a job dropped without closing holds nothing of the next job's). Their held jobs
    are logged if the sessions are collected without commit."""
    _open.set(())
    _bound.set(())


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
        logger.error("jobkit: enqueue after the transaction committed failed for %s: %s",
                     _names(jobs), exc, exc_info=True)


def _names(jobs: list[Job]) -> str:
    shown = ", ".join(f"{type(job).__qualname__} {job.job_id}" for job in jobs[:5])
    return shown + (f" and {len(jobs) - 5} more" if len(jobs) > 5 else "")


def _drop(jobs: list[Job], why: str) -> None:
    for job in jobs:
        job.waiting_for_commit = False
    if jobs:
        logger.debug("jobkit: not enqueued (%s): %s", why, _names(jobs))


def _collected(held: dict[int, Entries]) -> None:
    """A session holding jobs was garbage-collected: dropped without commit, rollback or
    close, so its jobs are never sent. Said loudly: this is a bug in the caller's code."""
    jobs = [job for entries in held.values() for jobs, _ in entries for job in jobs]
    for job in jobs:
        job.waiting_for_commit = False
    if jobs:
        logger.error("jobkit: a session was garbage-collected with its transaction still open "
                     "(neither committed nor closed); the jobs it held are not enqueued: %s",
                     _names(jobs))


# -- SQLAlchemy sessions ------------------------------------------------------------------------

def _check_target(target: Any) -> None:
    from sqlalchemy.orm import Session, scoped_session, sessionmaker

    if isinstance(target, Session | sessionmaker | scoped_session) or (
            isinstance(target, type) and issubclass(target, Session)):
        return
    raise TypeError(f"jobkit.transactions.watch takes a sessionmaker, a scoped_session, a "
                    f"Session class or a Session, not {target!r} (jobkit watches sessions, "
                    f"not engines or connections)")


def _is_watched(session: Any) -> bool:
    from sqlalchemy.orm import Session

    return isinstance(session, Session) and \
        _after_transaction_create in list(session.dispatch.after_transaction_create)


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


def _session_register() -> Register | None:
    """How to hold jobs in a session named with `holding`, else in the newest watched session
    of this context whose transaction is explicit or has written; None when there is none."""
    bound, opened = _bound.get(), _open.get()
    if not bound and not opened:
        return None  # the common case: nothing imported, nothing scanned
    for session in reversed(bound):
        root = session.get_transaction()
        if root is None:
            session.begin()  # held until this session commits, as `holding` promised
            root = session.get_transaction()
        if root is not None and root.is_active:
            return _register_in(session, _state(session))
    for ref, state in reversed(opened):
        session = ref()
        if session is None or session.info.get(_STATE) is not state:
            continue  # collected, or that transaction ended (another context saw the end)
        if not (state.explicit or state.wrote or session.new or session.deleted
                or session.dirty):
            continue  # began by itself and has only read: its commit may never come
        root = session.get_transaction()
        if root is not None and root.is_active:  # not rolling back or committed already
            return _register_in(session, state)
    return None


def _register_in(session: Session, state: _SessionState) -> Register:
    target = session.get_nested_transaction() or session.get_transaction()
    entries = state.held.setdefault(id(target), [])
    if state.finalizer is None:
        state.finalizer = weakref.finalize(session, _collected, state.held)

    def register(run: Callable[[], None], jobs: list[Job]) -> None:
        entries.append((jobs, run))

    return register


def _after_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        if transaction.nested:  # a savepoint is begun explicitly: the root holds from now
            state = session.info.get(_STATE)
            if isinstance(state, _SessionState):
                state.explicit = True
        return
    from sqlalchemy.orm import SessionTransactionOrigin

    state = _SessionState(explicit=transaction.origin is SessionTransactionOrigin.BEGIN)
    old = session.info.get(_STATE)
    if isinstance(old, _SessionState) and old.finalizer is not None:
        old.finalizer.detach()
    session.info[_STATE] = state
    alive = tuple(entry for entry in _open.get()
                  if entry[0]() is not None and entry[0]() is not session)
    _open.set((*alive, (weakref.ref(session), state)))


def _after_begin(session: Session, transaction: SessionTransaction,
                 connection: Connection) -> None:
    """Follow the statements of a transaction that began by itself on this connection, so a
    write by any path (bulk_insert_mappings, `session.connection().execute(insert(...))`,
    text SQL) is seen: one listener per engine, once (adding and removing one per connection
    costs more than the transaction)."""
    from sqlalchemy import event

    state = session.info.get(_STATE)
    if not isinstance(state, _SessionState) or state.explicit:
        return  # not watched, or holds already
    engine = connection.engine
    if engine not in _engines:
        _engines.add(engine)
        event.listen(engine, "before_cursor_execute", _before_cursor_execute)
    _writers[connection] = state
    state.connections.append(weakref.ref(connection))


def _before_cursor_execute(connection: Connection, cursor: Any, statement: str,
                           *args: Any) -> None:
    state = _writers.get(connection)
    if state is not None and not state.wrote \
            and not statement.lstrip()[:9].upper().startswith(_READS):
        state.wrote = True


def _after_flush(session: Session, flush_context: Any) -> None:
    _state(session).wrote = True


def _do_orm_execute(execute_state: Any) -> None:
    if execute_state.is_insert or execute_state.is_update or execute_state.is_delete:
        _state(execute_state.session).wrote = True


def _after_commit(session: Session) -> None:
    """Called for the root and for each savepoint released, before it closes: the one
    committing is the innermost savepoint, else the root."""
    state = session.info.get(_STATE)
    committing = session.get_nested_transaction() or session.get_transaction()
    if isinstance(state, _SessionState) and committing is not None:
        state.committed.add(id(committing))


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    state = session.info.get(_STATE)
    if not isinstance(state, _SessionState):
        return
    key = id(transaction)
    entries = state.held.pop(key, [])
    committed = key in state.committed
    state.committed.discard(key)
    if transaction.parent is None:
        _end_root(session, state)
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


def _end_root(session: Session, state: _SessionState) -> None:
    if state.finalizer is not None:
        state.finalizer.detach()
    for ref in state.connections:
        connection = ref()
        if connection is not None and _writers.get(connection) is state:
            del _writers[connection]
    state.connections.clear()
    if session.info.get(_STATE) is state:
        session.info.pop(_STATE, None)  # a new transaction starts clean
    opened = _open.get()
    if any(entry[1] is state for entry in opened):
        _open.set(tuple(entry for entry in opened if entry[1] is not state))


_LISTENERS: dict[str, Callable[..., None]] = {
    "after_transaction_create": _after_transaction_create,
    "after_transaction_end": _after_transaction_end,
    "after_begin": _after_begin,
    "after_commit": _after_commit,
    "after_flush": _after_flush,
    "do_orm_execute": _do_orm_execute,
}
_ENDS = ("after_commit", "after_transaction_end")


# -- Django ----------------------------------------------------------------------------------

def _django_register() -> Register | None:
    """`transaction.on_commit` on every database of this thread inside an `atomic` block of
    its own (not one Django's TestCase opened): the jobs go once the last of them commits, and
    never if one rolls back. None when Django is not set up here or no such block is open."""
    global _django_configured
    if sys.modules.get("django.db") is None:
        return None  # Django not imported by the program: nothing to ask
    from django.db import connections, transaction

    if not _django_configured:
        from django.conf import settings

        if not settings.configured:
            return None
        _django_configured = True
    aliases = [connection.alias for connection in connections.all(initialized_only=True)
               if connection.in_atomic_block and any(
                   not getattr(block, "_from_testcase", False)
                   for block in connection.atomic_blocks)]
    if not aliases:
        return None

    def register(run: Callable[[], None], jobs: list[Job]) -> None:
        waiting = set(aliases)

        def committed(alias: str) -> None:
            waiting.discard(alias)
            if not waiting:
                run()

        for alias in aliases:
            transaction.on_commit(lambda alias=alias: committed(alias), using=alias,
                                  robust=True)

    return register
