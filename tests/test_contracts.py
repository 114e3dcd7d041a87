"""The kombu, Celery and redis-py internals jobkit's worker builds on, pinned: when an upgrade
renames or reshapes one, this fails naming the symbol (pyproject.toml pins celery and kombu to
5.7.x).

Each entry says where jobkit relies on it. Behaviour is covered by the real-worker tests; these
catch the silent kind of break, where an override stops being called.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

# (module, dotted attribute, parameters its signature must have, who relies on it)
CONTRACTS = [
    ("kombu.transport.redis", "Channel._brpop_start", ["timeout"], "worker/transport.py"),
    ("kombu.transport.redis", "Channel._brpop_read", [], "worker/transport.py"),
    ("kombu.transport.redis", "Channel._in_poll", None, "worker/transport.py"),
    ("kombu.transport.redis", "Channel._brpop_sent_at", None, "worker/transport.py"),
    ("kombu.transport.redis", "Channel._create_client", ["asynchronous"],
     "worker/transport.py"),
    ("kombu.transport.redis", "Channel.from_transport_options", None, "worker/transport.py"),
    ("kombu.transport.redis", "Channel._fanout_queues", None, "worker/transport.py"),
    ("kombu.transport.redis", "Channel.unacked_key", None, "worker/transport.py"),
    ("kombu.transport.redis", "Channel.unacked_index_key", None, "worker/transport.py"),
    ("kombu.transport.redis", "QoS.append", ["message", "delivery_tag"],
     "worker/transport.py: the fetch script records instead"),
    ("kombu.transport.redis", "QoS.restore_visible", [], "worker/transport.py: switched off"),
    ("kombu.transport.redis", "QoS.ack", ["delivery_tag"], "acks of in-flight keys"),
    ("kombu.transport.redis", "QoS.reject", ["delivery_tag", "requeue"], "requeue"),
    ("kombu.transport.redis", "SentinelChannel._sentinel_managed_pool", [],
     "worker/transport.py: SentinelChannel"),
    ("kombu.transport.redis", "SentinelTransport", None, "worker/transport.py"),
    ("kombu.transport.redis", "SentinelChannel._async_sentinel_manager", None,
     "worker/transport.py: SentinelChannel follows the master"),
    ("kombu.transport.redis", "Transport.establish_connection", [],
     "worker/transport.py: SentinelTransport retries quickly"),
    ("kombu.transport.redis", "Channel.active_queues", None, "worker/transport.py: order"),
    ("kombu.transport.virtual", "QoS._on_collect", None,
     "worker/transport.py: QoS.restore_unacked_once"),
    ("kombu.transport.virtual", "Message._raw", None, "worker/consumer.py: _keep"),
    ("redis.client", "Redis.parse_response", ["connection", "command_name"],
     "worker/transport.py: _brpop_read"),
    ("celery.worker.state", "should_stop", None, "worker/shutdown.py, worker/request.py"),
    ("celery.worker.consumer.consumer", "Consumer.task_consumer", None, "worker/shutdown.py"),
    ("celery.worker.consumer.consumer", "Consumer.cancel_task_queue", ["queue"],
     "worker/shutdown.py: TSTP"),
    ("celery.concurrency.prefork", "TaskPool._get_info", [], "worker/shutdown.py: pool.info"),
    ("celery.concurrency.thread", "TaskPool.on_start", [], "worker/pools.py: the loop"),
    ("celery.concurrency.thread", "TaskPool.on_stop", [], "worker/pools.py: waits for jobs"),
    ("kombu.transport.virtual", "QoS.restore_unacked_once", ["stderr"],
     "worker/transport.py: no hand-back when a channel closes"),
    ("kombu.transport.virtual", "QoS._delivered", None, "worker/transport.py: held tags"),
    ("kombu.transport.virtual", "Channel.basic_consume", ["queue", "no_ack", "callback"],
     "worker/transport.py: membership joins at the first acked consumer"),
    ("kombu.transport.virtual", "Transport._deliver", ["message", "queue"],
     "worker/transport.py: _deliver_or_bury"),
    ("celery.worker.state", "requests", None, "worker/transport.py: held tags"),
    ("celery.worker.state", "reserved_requests", None, "worker/consumer.py: on_close"),
    ("celery.worker.state", "scheduled_requests", None, "worker/consumer.py: on_close"),
    ("celery.worker.state", "should_terminate", None, "worker/request.py"),
    ("celery.worker.state", "task_ready", ["request"], "worker/request.py"),
    ("celery.worker.request", "Request.on_timeout", ["soft", "timeout"], "worker/request.py"),
    ("celery.worker.request", "Request.on_failure",
     ["exc_info", "send_failed_event", "return_ok"], "worker/request.py"),
    ("celery.worker.request", "Request.acknowledge", [], "worker/request.py"),
    ("celery.worker.request", "Request.reject", ["requeue"], "worker/request.py"),
    ("celery.worker.request", "Request.message", None, "worker/transport.py: held tags"),
    ("celery.app.task", "Task.Request", None, "worker/execution.py: JobTask.Request"),
    ("celery.worker.consumer.consumer", "Consumer.on_unknown_task",
     ["body", "message", "exc"], "worker/consumer.py"),
    ("celery.worker.consumer.consumer", "Consumer.on_invalid_task",
     ["body", "message", "exc"], "worker/consumer.py"),
    ("celery.worker.consumer.consumer", "Consumer.on_decode_error", ["message", "exc"],
     "worker/consumer.py"),
    ("celery.worker.consumer.consumer", "Consumer.on_unknown_message", ["body", "message"],
     "worker/consumer.py"),
    ("celery.worker.consumer.consumer", "Consumer.call_soon", ["p"], "worker/shutdown.py"),
    ("kombu.asynchronous.hub", "Hub._pop_ready", [], "worker/shutdown.py"),
    ("celery.worker.consumer.consumer", "Consumer.on_close", [],
     "worker/consumer.py: reserved jobs kept across a reconnect"),
    ("celery.worker.request", "Request._eta_timer_entry", None, "worker/consumer.py: on_close"),
    ("kombu.transport.redis", "QoS._remove_from_indices", ["delivery_tag"],
     "worker/transport.py: QoS.ack"),
    ("celery.signals", "worker_shutdown", None, "worker/app.py: membership.leave"),
    ("celery.signals", "worker_process_init", None, "worker/shutdown.py"),
    ("celery.app.registry", "TaskRegistry.__missing__", None, "worker/app.py: JobRegistry"),
    ("celery.worker.consumer.consumer", "Consumer.update_strategies", [],
     "worker/consumer.py: plain tasks get PlainRequest first"),
    ("celery.app.amqp", "Queues.select_add", ["queue"],
     "worker/plain_tasks.py: PlainTasksStep adds the celery queue"),
    ("celery.app.amqp", "Queues.consume_from", None, "worker/plain_tasks.py: PlainTasksStep"),
    ("kombu.transport.redis", "QoS.restore_by_tag", ["tag"],
     "worker/plain_tasks.py: a buried killed run is not requeued"),
]


@pytest.mark.parametrize(("module", "name", "parameters", "user"), CONTRACTS,
                         ids=[f"{m}.{n}" for m, n, _, _ in CONTRACTS])
def test_internal_we_rely_on_is_still_there(module: str, name: str,
                                            parameters: list[str] | None, user: str) -> None:
    target = importlib.import_module(module)
    for part in name.split("."):
        if isinstance(target, type) and part not in dir(target) and _instance_attribute(
                target, part):
            return  # set in __init__ (checked by reading the source below)
        assert hasattr(target, part), f"{module}.{name} is gone (relied on by {user})"
        target = getattr(target, part)
    if parameters is not None:
        signature = inspect.signature(target)
        missing = [p for p in parameters if p not in signature.parameters]
        assert not missing, (f"{module}.{name} lost parameters {missing} "
                             f"(relied on by {user}): now {signature}")


def _instance_attribute(cls: type, name: str) -> bool:
    """`name` is assigned as `self.<name>` somewhere in `cls`'s own source."""
    try:
        return f"self.{name}" in inspect.getsource(cls)
    except (OSError, TypeError):
        return False


def test_kombu_sentinel_channel_takes_master_name_from_the_transport_options() -> None:
    from kombu.transport.redis import SentinelChannel

    assert "master_name" in SentinelChannel.from_transport_options, \
        "kombu.transport.redis.SentinelChannel.from_transport_options lost master_name"


def test_kombu_qos_marks_a_restored_state() -> None:
    """QoS.restore_unacked_once sets `_delivered.restored` as kombu's own does."""
    from kombu.transport import virtual

    assert "restored" in inspect.getsource(virtual.QoS), "kombu's _delivered.restored changed"


def test_kombu_closes_a_channel_through_restore_unacked_once() -> None:
    """Our QoS.restore_unacked_once only keeps jobs from being handed back if kombu's channel
    close still goes through it."""
    from kombu.transport import virtual

    source = inspect.getsource(virtual.Channel.close)
    assert "restore_unacked_once" in source, "kombu.transport.virtual.Channel.close changed"


def test_celery_calls_on_close_after_a_lost_connection() -> None:
    """Consumer.on_close (reserved jobs kept) must still be what Celery calls when it lost the
    connection, before it reconnects."""
    from celery.worker.consumer.consumer import Consumer

    source = inspect.getsource(Consumer.start)
    assert "self.on_close()" in source and "on_connection_error_after_connected" in source, \
        "celery.worker.consumer.consumer.Consumer.start no longer calls on_close on reconnect"


def test_celery_sends_worker_shutdown_after_stopping_the_pool() -> None:
    """membership.leave (at worker_shutdown) hands back what is still held: safe only once the
    pool has stopped, i.e. after WorkController._shutdown."""
    from celery.worker.worker import WorkController

    source = inspect.getsource(WorkController.stop)
    assert source.index("_shutdown(") < source.index("_send_worker_shutdown"), \
        "celery.worker.worker.WorkController.stop: worker_shutdown no longer follows _shutdown"


def test_celery_ack_on_a_hard_time_limit_goes_through_request_on_timeout() -> None:
    from celery.worker.request import Request

    source = inspect.getsource(Request.on_timeout)
    assert "acks_on_timeout" in source, "celery.worker.request.Request.on_timeout changed"


def test_celery_builds_a_tasks_requests_from_task_request() -> None:
    """plain_tasks.adopt gives a plain task its request class through `task.Request`."""
    from celery.worker import strategy

    assert "task.Request" in inspect.getsource(strategy.default), \
        "celery.worker.strategy.default no longer builds requests from task.Request"


def test_kombu_requeues_only_what_is_still_in_flight() -> None:
    """A killed plain task is moved to the dead set first; the requeue Celery then asks for
    (reject_on_worker_lost) must find no in-flight record and push nothing."""
    from kombu.transport import redis as kombu_redis

    source = inspect.getsource(kombu_redis.QoS.restore_by_tag)
    assert "hget(self.unacked_key, tag)" in source and "if p:" in source, \
        "kombu.transport.redis.QoS.restore_by_tag changed"


def test_kombu_requeues_an_in_flight_record_with_no_exchange_to_the_queue_it_names() -> None:
    """The fetch writes [message, "", queue]: kombu's requeue unpacks [M, EX, RK] and pushes
    to _lookup(EX, RK), which for no exchange is the routing key itself (the queue), whatever
    exchange and routing key the message was published with."""
    from types import SimpleNamespace

    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual

    source = inspect.getsource(kombu_redis.QoS.restore_by_tag)
    assert "M, EX, RK = loads(" in source and "_do_restore_message(M, EX, RK" in source, \
        "kombu.transport.redis.QoS.restore_by_tag reads the in-flight record differently"
    assert "self._lookup(exchange, routing_key)" in inspect.getsource(
        kombu_redis.Channel._do_restore_message), "kombu's _do_restore_message changed"
    lookup: Any = virtual.Channel._lookup
    assert lookup(SimpleNamespace(deadletter_queue=None), "", "low") == ["low"]


def test_celery_reports_a_task_raising_system_exit_as_a_lost_process() -> None:
    """request.py and plain_tasks.py take SystemExit and KeyboardInterrupt (the pool process
    ended) for the task's failure, except when the request was revoked or cancelled."""
    from celery.worker.request import Request

    source = inspect.getsource(Request.on_failure)
    assert "isinstance(exc, (SystemExit, KeyboardInterrupt))" in source \
        and "self._already_cancelled or self._already_revoked" in source \
        and "_worker_lost_info(exc)" in source, \
        "celery.worker.request.Request.on_failure handles SystemExit differently"
