"""kombu's Redis transport, with Sidekiq's queue order and a fetch that cannot lose a job.

Why our own (checked against kombu 5.7, pinned in pyproject.toml; see KOMBU_NOTES.md):
- Order: kombu rotates queues round-robin and orders its BRPOP keys priority-major. Sidekiq
  users expect strict order (a later queue only when all earlier ones are empty) or weighted
  order. We build the key list ourselves, queue-major (see queues.fetch_order).
- Loss: kombu pops with BRPOP and records the message as in flight in a second round trip; a
  kill -9 between the two loses it without a trace. Our fetch is one Lua script that pops from
  the first non-empty list and records the message in this channel's own in-flight keys.
- Recovery: those keys are per consuming channel, with a heartbeat (recovery.py), so a dead
  worker's jobs come back within seconds, and a live worker's long job is never handed out
  twice (kombu's own visibility-timeout sweep is pushed out of the way).

Lua cannot block, so when every queue is empty the channel blocks on its queues' wake lists
(queues.wake_key): every jobkit push adds a token there, so an idle worker wakes at once; jobs
pushed by other producers (plain Celery) are found within IDLE_WAIT_SECONDS.
"""

from __future__ import annotations

import time
from time import monotonic
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from jobkit import recovery
from jobkit.queues import PAUSED_KEY, PRIORITY_STEPS, fetch_order, list_key, wake_key

__all__ = ["Channel", "Transport"]

IDLE_WAIT_SECONDS = 1
PAUSED_REFRESH_SECONDS = 1.0
# Recovery is ours (recovery.py); kombu's sweep would re-queue long-running jobs of live workers.
VISIBILITY_TIMEOUT_SECONDS = 30 * 24 * 3600

_FETCH = """
local n = #KEYS - 2
for i = 1, n do
  local msg = redis.call('RPOP', KEYS[i])
  while msg do
    local ok, decoded = pcall(cjson.decode, msg)
    local props = ok and type(decoded) == 'table' and decoded.properties
    local tag = type(props) == 'table' and props.delivery_tag
    if type(tag) == 'string' then
      local info = props.delivery_info or {}
      redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
      redis.call('HSET', KEYS[n + 1], tag, '[' .. msg .. ',' .. cjson.encode(info.exchange or '')
        .. ',' .. cjson.encode(info.routing_key or '') .. ']')
      return {KEYS[i], msg}
    end
    -- Not a message a worker can take: keep it in the dead set rather than lose it.
    redis.call('ZADD', 'jobkit:dead', ARGV[1], cjson.encode({list_key = KEYS[i], message = msg,
      error_class = 'jobkit.UnreadableMessage', failed_at = tonumber(ARGV[1]),
      error_message = 'not a kombu message (no JSON object with properties.delivery_tag)'}))
    msg = redis.call('RPOP', KEYS[i])
  end
end
return false
"""


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel._registered_consumer:
            # The fetch script already recorded the message, atomically with the pop.
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    #: {queue: weight} and "strict" | "weighted", from broker_transport_options.
    jobkit_queue_weights: dict[str, int] = {}
    jobkit_queue_order: str = "strict"
    jobkit_heartbeat_timeout: float = 10.0

    from_transport_options = kombu_redis.Channel.from_transport_options + (
        "jobkit_queue_weights",
        "jobkit_queue_order",
        "jobkit_heartbeat_timeout",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.jobkit_identity = recovery.ConsumerIdentity()
        self.unacked_key = self.jobkit_identity.unacked_key
        self.unacked_index_key = self.jobkit_identity.unacked_index_key
        self.unacked_mutex_key = self.jobkit_identity.unacked_mutex_key
        self._waiting = False
        self._registered_consumer = False
        self._paused_names: set[str] = set()
        self._paused_read_at = float("-inf")
        super().__init__(*args, **kwargs)
        self.visibility_timeout = VISIBILITY_TIMEOUT_SECONDS

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        result = super().basic_consume(queue, no_ack, *args, **kwargs)
        if not no_ack and queue not in self._fanout_queues and not self._registered_consumer:
            self._registered_consumer = True
            recovery.register(self.jobkit_identity, self, self.jobkit_heartbeat_timeout)
        return result

    def close(self) -> None:
        super().close()  # kombu hands back the messages it delivered
        if self._registered_consumer:
            self._registered_consumer = False
            recovery.unregister(self.jobkit_identity)

    def _create_client(self, asynchronous: bool = False) -> Any:
        """One synchronous client per channel, not one per ack: kombu builds a new redis.Redis
        (and its callback table) for every MULTI, a fifth of a no-op job's cost."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self.__dict__.get("_jobkit_client")
        if client is None or client.connection_pool is not self.pool:
            client = self._jobkit_client = super()._create_client()
        return client

    def _paused(self) -> set[str]:
        """Queues paused from the dashboard, read at most once a second."""
        now = monotonic()
        if now - self._paused_read_at >= PAUSED_REFRESH_SECONDS:
            self._paused_read_at = now
            names = self._create_client().smembers(PAUSED_KEY)
            self._paused_names = {n.decode() if isinstance(n, bytes) else n for n in names}
        return self._paused_names

    def _ordered_queues(self) -> list[str]:
        paused = self._paused()
        active = [q for q in self.active_queues if q not in paused]
        configured = [q for q in self.jobkit_queue_weights if q in active]
        queues = configured + [q for q in active if q not in self.jobkit_queue_weights]
        return fetch_order(queues, self.jobkit_queue_weights, self.jobkit_queue_order)

    def _brpop_start(self, timeout: Any = None) -> None:
        if not self._registered_consumer:  # replies to `celery inspect`, Flower: no acks
            return super()._brpop_start(timeout)
        queues = self._ordered_queues()
        if not queues:
            if not self.active_queues:
                return
            self._waiting = True  # every queue is paused: sleep in Redis, then look again
            queues = ["(paused)"]
        if self._waiting:
            command = ["BRPOP", *(wake_key(q) for q in queues), IDLE_WAIT_SECONDS]
        else:
            keys = [list_key(queue, step) for queue in queues for step in PRIORITY_STEPS]
            command = ["EVAL", _FETCH, len(keys) + 2, *keys, self.unacked_key,
                       self.unacked_index_key, time.time()]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> Any:
        if not self._registered_consumer:
            return super()._brpop_read(**options)
        if self._waiting:  # a wake token or the idle timeout: fetch next, either way
            self._waiting = False
            self._read_wake_reply(**options)
            raise kombu_redis.Empty()
        try:
            return super()._brpop_read(**options)
        except kombu_redis.Empty:
            self._waiting = True  # every queue was empty: block on the wake lists next
            raise

    def _read_wake_reply(self, **options: Any) -> None:
        try:
            self.client.parse_response(self.client.connection, "BRPOP", **options)
        except self.connection_errors:
            self.client.connection.disconnect()
            raise
        finally:
            self._in_poll = None


class Transport(kombu_redis.Transport):
    Channel = Channel
