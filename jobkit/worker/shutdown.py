"""Sidekiq's worker signals on a Celery worker: TSTP quiet, TERM within `timeout`, TTIN stacks.

Why our own: on Celery 5.7 a SIGTERM waits for running jobs with no limit, and the built-in
soft shutdown applies only to SIGQUIT, sleeps inside the signal handler, and in the solo pool
loses the running job. Heroku sends SIGKILL 30 s after SIGTERM, so a job still running then
would sit in the in-flight keys until recovery notices. Here:

- TSTP: stop fetching (cancel every queue on the event loop), finish running jobs, stay up.
- TERM: Celery's warm shutdown (stop fetching, let running jobs finish); if the worker is still
  up after `timeout` seconds, every job it still holds goes back to the front of its queue and
  the process exits. Iterable jobs are told at once to stop after their current item
  (jobkit.iteration.stop), so they go back to their queues well before that.
- TTIN: log every thread's stack (and, on the asyncio pool, every task's on its loop).

An embedded worker (Celery's start_worker / celery_worker fixture, jobkit_embedded_worker) runs
in a thread of a test process: no handler is installed there (Python allows them only on the
main thread, and the process's signals are the test runner's), and when it stops (cold) its
jobkit steps are stopped and it leaves the worker set, as a real worker's exit would do.

Signal handlers only put the signal number on a queue (safe in a handler); a helper thread does
the work, handing anything that touches the event loop to `consumer.call_soon`, which is
thread-safe. Relies on kombu/Celery internals (hub._pop_ready, pool.info), pinned in
pyproject.toml and covered by tests on a real worker.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery import signals as celery_signals
from celery.contrib.testing.worker import test_worker_stopped
from celery.worker import state as worker_state

from jobkit.config import current_settings
from jobkit.iteration import stop as iteration_stop
from jobkit.worker import membership
from jobkit.worker.pools import AsyncioPool

__all__ = ["SidekiqSignals", "handing_back", "terminating"]

logger = logging.getLogger(__name__)

#: Read by request.py: pool processes lost from now on die with the worker, not by their jobs.
#: `terminating`: TERM received (set in the handler itself, before the loop can see a pool
#: process that got the same TERM die); `handing_back`: TERM's timeout reached.
terminating = False
handing_back = False

_ACK_CALLBACKS = ("ack_log_error", "reject_log_error")


class SidekiqSignals(bootsteps.StartStopStep):
    """Consumer bootstep installing the TSTP / TERM / TTIN behaviour above."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "jobkit signals"

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self.consumer = consumer
        self.quiet = False
        self.stopping = False
        self.main_pid: int | None = None
        self.inbox: queue.SimpleQueue[int] = queue.SimpleQueue()

    def start(self, consumer: Any) -> None:
        if self.quiet:  # a reconnect re-subscribes: stay quiet
            self._cancel_queues()
        if self.main_pid is None:  # after Celery installed its own handlers
            self.main_pid = os.getpid()
            if threading.current_thread() is not threading.main_thread():
                # An embedded worker (celery.contrib.testing.worker.start_worker, the
                # celery_worker fixture) runs in a thread, where Python refuses handlers:
                # its process's signals belong to the test runner.
                logger.debug("jobkit signals: worker not on the main thread; TERM/TSTP/TTIN "
                             "handlers not installed")
                return
            threading.Thread(target=self._dispatch, name="jobkit-signals", daemon=True).start()
            for signum in (signal.SIGTERM, signal.SIGTSTP, signal.SIGTTIN):
                signal.signal(signum, self._on_signal)
            membership.update_info(commands=True)  # Quiet and Stop may signal it (heartbeat.py)

    def _on_signal(self, signum: int, frame: Any) -> None:
        global terminating
        if os.getpid() == self.main_pid:
            if signum == signal.SIGTERM:
                terminating = True
                iteration_stop.request_stop()  # iterable jobs stop after their current item
            self.inbox.put(signum)

    def _dispatch(self) -> None:
        actions: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self._term, signal.SIGTSTP: self._quiet,
            signal.SIGTTIN: self._stacks}
        while True:
            signum = self.inbox.get()
            try:
                actions[signum]()
            except Exception:
                logger.exception("handling signal %s failed", signum)

    def _cancel_queues(self) -> None:
        task_consumer = self.consumer.task_consumer
        for declared in list(task_consumer.queues if task_consumer else ()):
            self.consumer.cancel_task_queue(declared.name)

    def _quiet(self) -> None:
        if not self.quiet:
            self.quiet = True
            logger.warning("TSTP: quiet; running jobs finish, no new jobs are fetched")
            self.consumer.call_soon(self._cancel_queues)
            # On the Busy page from the next beat: said here, not on the event loop, which a
            # solo worker's job holds until it ends (it fetches nothing meanwhile either).
            membership.update_info(quiet=True)

    def _term(self) -> None:
        if self.stopping:
            logger.warning("TERM: already shutting down")
            return
        self.stopping = True
        membership.update_info(stopping=True)
        timeout = current_settings().timeout
        logger.warning("TERM: shutting down; running jobs have %.0f s to finish", timeout)
        worker_state.should_stop = 0  # Celery's warm shutdown
        self.consumer.call_soon(lambda: None)  # wake the loop so it notices now
        timer = threading.Timer(timeout, self._hand_back_and_exit)
        timer.daemon = True  # a worker that finishes in time exits without it
        timer.start()

    def _hand_back_and_exit(self) -> None:
        global handing_back
        handing_back = True  # children killed below are not failures of their jobs
        self._run_pending_acks()  # a job finished in time must not be handed back too
        for pid in self._pool_children():  # stop them first, so no job runs twice
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        try:
            membership.leave()  # every job still held: back to its queue
            logger.warning("TERM: timeout reached; unfinished jobs handed back to their queues")
        except Exception:  # Redis away: the jobs stay in flight, recovery puts them back
            logger.exception("TERM: timeout reached; the jobs could not be handed back now, "
                             "other workers put them back once this one's heartbeat expires")
        finally:
            logging.shutdown()
            os._exit(0)

    def _run_pending_acks(self) -> None:
        hub = self.consumer.hub
        ready = hub._pop_ready() if hub else set()
        while ready:
            callback = ready.pop()
            if getattr(getattr(callback, "fun", None), "__name__", "") in _ACK_CALLBACKS:
                callback()
            else:
                hub.call_soon(callback)

    def _stacks(self) -> None:
        log_thread_stacks()
        if isinstance(self.consumer.pool, AsyncioPool):  # and where each async job is
            self.consumer.pool.log_task_stacks()

    def _pool_children(self) -> list[int]:
        try:
            processes = self.consumer.pool.info.get("processes", ())
        except Exception:
            return []
        return [pid for pid in processes if pid != os.getpid()]


def log_thread_stacks() -> None:
    """Every thread's current stack, to the log (Sidekiq's TTIN)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        logger.warning("TTIN: thread %s\n%s", names.get(ident, ident), stack)


@test_worker_stopped.connect
def _embedded_worker_leaves(sender: Any = None, worker: Any = None, **_: Any) -> None:
    """An embedded worker (start_worker, the celery_worker fixture) stops cold, inside a
    process that lives on: Celery then skips the stop() of steps that hold no `obj` and sends
    no worker_shutdown. Do what a real worker's exit does: stop jobkit's worker steps (the
    poller and periodic threads would run on in the test process) and the thread pool's
    threads, stop the heartbeat and hand back what it still holds."""
    steps = getattr(sender, "steps", None) or {}
    if SidekiqSignals not in steps.get("consumer", ()):  # not a jobkit app
        return
    for step in getattr(worker, "steps", None) or ():
        if type(step).__module__.startswith("jobkit."):
            try:
                step.stop(worker)
            except Exception:
                logger.exception("stopping %s of the embedded worker failed", step)
    running = [f"{request.name}[{request.id}]" for request in list(worker_state.active_requests)]
    if running:  # a thread cannot be stopped: say so, the test may not
        logger.warning("embedded worker stopped with %d job(s) still running, which run on in "
                       "this process and are handed back to their queues: %s", len(running),
                       ", ".join(running))
    executor = getattr(getattr(worker, "pool", None), "executor", None)
    if executor is not None:  # a cold stop leaves a thread pool's threads up, one set a test
        executor.shutdown(wait=False, cancel_futures=True)
    membership.leave()


#: PIDs of the processes that started a worker (worker_init, sent before the pool is made).
_worker_pids: set[int] = set()


@celery_signals.worker_init.connect
def _remember_worker_process(**_: Any) -> None:
    _worker_pids.add(os.getpid())


@celery_signals.worker_process_init.connect
def _children_ignore_worker_signals(**_: Any) -> None:
    """Pool children leave TSTP and TTIN to the main process (a process-group TSTP would
    otherwise stop them), and a TERM that reaches one during an iteration stops the iteration
    between items (jobkit.iteration.stop). The solo pool sends this signal too, in the worker's
    own process: that one is no pool child (and, embedded, it is a test runner)."""
    if os.getpid() in _worker_pids:
        return
    signal.signal(signal.SIGTSTP, signal.SIG_IGN)
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    iteration_stop.in_pool_process()
