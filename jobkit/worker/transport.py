"""kombu's Redis transport, with Sidekiq's queue order and a fetch that cannot lose a job.

Why our own (checked against kombu 5.7, pinned in pyproject.toml; see docs/architecture.md and
tests/test_contracts.py):
- Order: kombu rotates queues round-robin and orders its BRPOP keys priority-major. Sidekiq
  users expect strict order (a later queue only when all earlier ones are empty) or weighted
  order. We build the key list ourselves, queue-major (see queues.fetch_order).
- Loss: kombu pops with BRPOP and records the message as in flight in a second round trip; a
  kill -9 between the two loses it. Our fetch is one Lua script that pops from the first
  non-empty list and, in the same step, either records the message in this worker's in-flight
  keys or, if it is not a message a worker can take, buries it in the dead set with the reason.
  A message that still cannot be delivered after that (say its body is not UTF-8) is moved from
  the in-flight keys to the dead set, again in one step: the consumer never crashes on it.
- Twice: kombu hands back every message a channel holds when the channel closes, which happens
  on every reconnect while the jobs still run; and its visibility sweep re-queues long jobs of
  live workers. Both are switched off here. The in-flight keys belong to the worker process
  (membership.py) and outlive its channels; what nobody in the process holds any more is put
  back by `_reconcile`, the rest when the worker stops (membership.leave) or dies (recovery.py).

Lua cannot block, so when every queue is empty the channel blocks on its queues' wake lists
(keys.wake_key): every jobkit push adds a token there, so an idle worker wakes at once; jobs
pushed by other producers (plain Celery) are found within IDLE_WAIT_SECONDS.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from queue import Empty
from time import monotonic
from typing import TYPE_CHECKING, Any, cast

import redis
from celery.worker import state as worker_state
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis import exceptions as redis_errors

from jobkit import keys
from jobkit.controls import concurrency
from jobkit.controls.release import let_go
from jobkit.job_sets import BURY_LUA, dead_limits, describe_error, entry_member
from jobkit.masking import mask_secrets
from jobkit.queues import fetch_order
from jobkit.redis_client import MASTER_CHECK_SECONDS, get_redis
from jobkit.worker import envelope, membership, plain_tasks
from jobkit.worker.recovery import hand_back

__all__ = ["Channel", "SentinelChannel", "SentinelTransport", "Transport"]

logger = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 1
PAUSED_REFRESH_SECONDS = 1.0
BURY_AT_MOST = 100  # unreadable items buried by one fetch call, so a flood cannot block Redis
RECONCILE_EVERY_SECONDS = 5.0
ORPHAN_MIN_AGE_SECONDS = 2.0
# Redis really gone. Not kombu's `connection_errors`: it counts KeyError as one, and a message
# without a header Celery needs raises KeyError, which must bury it, not reconnect forever.
_CONNECTION_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
MASTER_WAIT_SECONDS = 15.0  # Sentinel: how long a connection attempt waits for a master
MASTER_RETRY_SECONDS = 0.25

# KEYS: the lists in fetch order, then unacked, unacked_index, heartbeat, dead.
# ARGV: now, dead max jobs, dead timeout, priority separator, bury at most.
# Returns {list, message, delivery tag}; false when every list is empty; 0 when it buried
# its quota of unreadable items (fetch again); -1 when this worker's heartbeat is missing
# (taken for dead: it fetches nothing until its heartbeat is back, so the reaper never takes a
# job it just took). Sent by its SHA: the script is 3 KB, and this runs once per job.
_FETCH = BURY_LUA + """
local n = #KEYS - 4
local unacked, index, heartbeat, dead = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3], KEYS[n + 4]
if redis.call('EXISTS', heartbeat) == 0 then return -1 end
local now = tonumber(ARGV[1])

local function optional(value, kind)
  return value == nil or type(value) == kind
end

local function problem(msg)
  local ok, m = pcall(cjson.decode, msg)
  if not ok then return 'not JSON' end
  if type(m) ~= 'table' then return 'not a JSON object' end
  local props = m.properties
  if type(props) ~= 'table' then return 'no properties object' end
  local tag = props.delivery_tag
  if type(tag) ~= 'string' or tag == '' then return 'no properties.delivery_tag string' end
  if not string.find(tag, '^[ -~]+$') then
    return 'properties.delivery_tag is not printable ASCII'
  end
  local info = props.delivery_info
  if type(info) ~= 'table' then return 'no properties.delivery_info object' end
  if not (optional(info.exchange, 'string') and optional(info.routing_key, 'string')) then
    return 'delivery_info exchange or routing_key is not a string'
  end
  if not optional(props.priority, 'number') then return 'priority is not a number' end
  if not optional(m.headers, 'table') then return 'headers is not an object' end
  if type(m.body) ~= 'string' or m.body == '' then return 'empty or missing body' end
  if props.body_encoding == 'base64' then
    if #m.body % 4 ~= 0 or not string.find(m.body, '^[A-Za-z0-9+/]+=?=?$') then
      return 'body is not valid base64'
    end
  elseif props.body_encoding ~= nil then
    return 'unknown body_encoding'
  end
  if m['content-type'] ~= 'application/json' then
    return 'content-type is not application/json (the only one a jobkit worker accepts)'
  end
  if not (m['content-encoding'] == nil or m['content-encoding'] == 'utf-8') then
    return 'content-encoding is not utf-8'
  end
  if redis.call('HEXISTS', unacked, tag) == 1 then
    return 'a message with the same delivery tag is already in flight on this worker'
  end
  return nil, tag
end

local buried = 0
for i = 1, n do
  local msg = redis.call('RPOP', KEYS[i])
  while msg do
    local why, tag = problem(msg)
    if not why then
      local queue = string.match(KEYS[i], '^(.-)' .. ARGV[4] .. '%d$') or KEYS[i]
      redis.call('ZADD', index, now, tag)
      -- kombu's shape, [message, exchange, routing key], with no exchange and the queue as
      -- the routing key: its restore_by_tag (a requeue) looks up ('', queue), which is the
      -- queue itself; a named exchange would route by a queue name no binding knows.
      redis.call('HSET', unacked, tag, '[' .. msg .. ',"",' .. cjson.encode(queue) .. ']')
      return {KEYS[i], msg, tag}
    end
    bury(dead, now, cjson.encode({list_key = KEYS[i], message = msg, failed_at = now,
      error_class = 'jobkit.UnreadableMessage', error_message = why}), ARGV[2], ARGV[3])
    buried = buried + 1
    if buried >= tonumber(ARGV[5]) then return 0 end
    msg = redis.call('RPOP', KEYS[i])
  end
end
return false
"""
_FETCH_SHA = hashlib.sha1(_FETCH.encode()).hexdigest()

# KEYS: unacked, unacked_index, dead. ARGV: tag, now, member, dead max jobs, dead timeout,
# held only ('1': bury only a message still in flight here; one that left, taken for dead by
# the reaper, is another worker's now, and would be in the dead set twice).
_BURY_IN_FLIGHT = BURY_LUA + """
local held = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if held == 0 and ARGV[6] == '1' then return 0 end
bury(KEYS[3], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
"""


class QoS(kombu_redis.QoS):
    """kombu's ack emulation, minus what a worker's own in-flight keys make wrong."""

    _delivered: OrderedDict[str, Any]  # None only as kombu's class default; set in __init__

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel._registered_consumer:
            # The fetch script already recorded the message, atomically with the pop.
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """Remove the job from the in-flight keys. An acknowledgement that Redis did not take
        (the connection dropped) is kept and sent again after the reconnect, so a job that
        finished is not handed back as abandoned and run again."""
        if not self.channel._registered_consumer:
            return super().ack(delivery_tag)
        try:
            self._remove_from_indices(delivery_tag).execute()
        except _CONNECTION_ERRORS as exc:
            membership.unsent_acks.add(bytes_to_str(delivery_tag))
            logger.warning("jobkit: acknowledgement of %s not written (%s); it is sent again "
                           "after the reconnect", bytes_to_str(delivery_tag),
                           mask_secrets(str(exc)))
        virtual.QoS.ack(self, delivery_tag)
        return None

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self.channel._registered_consumer and not requeue:
            return self.ack(delivery_tag)  # the same for Redis: the job leaves the keys
        return super().reject(delivery_tag, requeue)

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        """kombu hands back what the channel holds when it closes; a worker's jobs may still
        be running then (a reconnect), so they stay in the in-flight keys (see module doc)."""
        if not self.channel._registered_consumer:
            return super().restore_unacked_once(stderr)
        self._on_collect.cancel()
        self._delivered.clear()
        cast(Any, self._delivered).restored = True  # kombu's flag, an attribute on the dict
        return None

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """kombu's sweep re-queues whatever is older than `visibility_timeout`, running or
        not; recovery by heartbeat (recovery.py) replaces it."""


_JOBKIT_OPTIONS = ("jobkit_queue_weights", "jobkit_queue_order")

if TYPE_CHECKING:  # the mixin runs on kombu's channel (see Channel below): let pyright see it
    _ChannelBase = kombu_redis.Channel
else:
    _ChannelBase = object


class JobkitChannel(_ChannelBase):
    """What jobkit adds to kombu's Redis channel (mixed into its plain and Sentinel ones)."""

    QoS = QoS
    #: {queue: weight} and "strict" | "weighted", from broker_transport_options.
    jobkit_queue_weights: dict[str, int] = {}
    jobkit_queue_order: str = "strict"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        me = membership.identity()
        self.unacked_key = me.unacked_key
        self.unacked_index_key = me.unacked_index_key
        self._waiting = False
        self._registered_consumer = False
        self._paused_names: set[str] = set()
        self._paused_read_at = float("-inf")
        self._reconciled_at = float("-inf")
        self._suspects: set[str] = set()
        super().__init__(*args, **kwargs)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        result = super().basic_consume(queue, no_ack, *args, **kwargs)
        if not no_ack and queue not in self._fanout_queues and not self._registered_consumer:
            self._registered_consumer = True
            membership.join()
        return result

    def _create_client(self, asynchronous: bool = False) -> Any:
        """One synchronous client per channel, not one per ack: kombu builds a new redis.Redis
        (and its callback table) for every MULTI, a fifth of a no-op job's cost. A closed
        channel's acks go through the process's own client (same Redis, same keys)."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self.connection is None:  # closed at a reconnect: its jobs still run and get acked
            return get_redis()
        client = self.__dict__.get("_jobkit_client")
        if client is None or client.connection_pool is not self.pool:
            client = self._jobkit_client = super()._create_client()
        return client

    def _paused(self) -> set[str]:
        """Queues paused from the dashboard, read at most once a second."""
        now = monotonic()
        if now - self._paused_read_at >= PAUSED_REFRESH_SECONDS:
            self._paused_read_at = now
            names = self._create_client().smembers(keys.PAUSED)
            self._paused_names = {bytes_to_str(n) for n in names}
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
            command = ["BRPOP", *(keys.wake_key(q) for q in queues), IDLE_WAIT_SECONDS]
        else:
            self._reconcile()
            lists = [keys.list_key(queue, step) for queue in queues
                     for step in keys.PRIORITY_STEPS]
            command = ["EVALSHA", _FETCH_SHA, len(lists) + 4, *lists, self.unacked_key,
                       self.unacked_index_key, membership.identity().heartbeat_key, keys.DEAD,
                       time.time(), *dead_limits(), keys.PRIORITY_SEPARATOR, BURY_AT_MOST]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> Any:
        if not self._registered_consumer:
            return super()._brpop_read(**options)
        command = "BRPOP" if self._waiting else "EVALSHA"
        try:
            reply = self.client.parse_response(self.client.connection, command, **options)
        except redis_errors.NoScriptError:  # a new or restarted Redis: load it, fetch again
            self._create_client().script_load(_FETCH)
            raise Empty() from None
        except self.connection_errors:
            self.client.connection.disconnect()
            raise
        finally:
            self._in_poll = None
        if self._waiting:  # a wake token or the idle timeout: fetch next, either way
            self._waiting = False
            raise Empty()
        if reply == 0:  # buried a batch of unreadable items: look again at once
            raise Empty()
        if reply == -1:
            self._not_alive()
            raise Empty()
        if not reply:
            self._waiting = True  # every queue was empty: block on the wake lists next
            raise Empty()
        list_key, item, tag = reply
        self._deliver_or_bury(bytes_to_str(list_key), item, bytes_to_str(tag))
        return True

    def _deliver_or_bury(self, list_key: str, item: bytes, tag: str) -> None:
        """Hand the message to the consumer; if anything about it breaks that (not UTF-8, a
        body Celery cannot decode...), move it from the in-flight keys to the dead set."""
        try:
            raw = loads(bytes_to_str(item))
            why = envelope.problem(raw)
            if why is not None:
                logger.error("jobkit: a message from %r cannot run (%s); kept in the dead set",
                             list_key, why)
                self.jobkit_bury(tag, item, list_key, why,
                                 error_class="jobkit.UnreadableMessage")
                return
            if plain_tasks.park(self._create_client(), raw, list_key, tag, self.unacked_key,
                                self.unacked_index_key):
                return  # due later: in the scheduled set, not in this worker's memory
            if not self._admitted(raw, list_key, item, tag):
                return
            envelope.note_fetched_from(raw, list_key)
            self.connection._deliver(raw, keys.queue_of(list_key))
        except _CONNECTION_ERRORS:
            raise  # the message stays in flight; _reconcile hands it back after a reconnect
        except Exception as exc:
            logger.error("jobkit: a message from %r cannot be delivered (%s: %s); kept in the "
                         "dead set", list_key, type(exc).__name__, mask_secrets(str(exc)))
            try:
                self.jobkit_bury(tag, item, list_key, exc)
            except redis_errors.RedisError:
                logger.exception("jobkit: cannot bury it now; it stays in flight and is "
                                 "handed back later")

    def _admitted(self, raw: dict[str, Any], list_key: str, item: bytes, tag: str) -> bool:
        """A job under a concurrency limit runs only with a slot; without one it is held
        (controls/concurrency.py), out of this worker's in-flight keys in the same step."""
        headers = raw.get("headers") or {}
        control = headers.get("jobkit_concurrency")
        if control is None:
            return True
        job_id = headers.get("job_id") or headers["id"]
        if concurrency.admit(self._create_client(), control, job_id, tag, list_key, item,
                             self.unacked_key, self.unacked_index_key):
            return True
        logger.info("jobkit: job %s held: concurrency key %r is at its limit of %d", job_id,
                    control["key"], control["to"])
        return False

    def jobkit_bury(self, tag: str, item: bytes | str, list_key: str,
                    error: BaseException | str, /, *, held_only: bool = False,
                    **info: Any) -> bool:
        """Move the in-flight message `tag` to the dead set, in one step (the one path for
        messages this worker took but will not run). With `held_only`, only while it is still
        in this worker's in-flight keys; False when it was not (then nothing is written)."""
        text = item.decode("utf-8", "backslashreplace") if isinstance(item, bytes) else item
        now = time.time()
        member = entry_member(list_key, text, failed_at=now, **{**describe_error(error),
                                                                **info})
        buried = self._create_client().register_script(_BURY_IN_FLIGHT)(
            keys=[self.unacked_key, self.unacked_index_key, keys.DEAD],
            args=[tag, now, member, *dead_limits(), "1" if held_only else "0"])
        if buried:
            let_go(text)  # it will not run: its concurrency slot and unique lock go
        qos = cast(QoS, self.qos)  # our class: JobkitChannel.QoS
        if tag in qos._delivered:  # free its prefetch slot, or the channel stops fetching
            virtual.QoS.ack(qos, tag)
        return bool(buried)

    def _not_alive(self) -> None:
        """The fetch found this worker's heartbeat gone (it was taken for dead, or Redis lost
        its data): beat now, then fetch. The reaper's script checks the heartbeat in the same
        atomic step as its move, so nothing fetched after this beat can be taken back."""
        logger.warning("jobkit: this worker's heartbeat was missing in Redis (taken for dead, "
                       "or Redis lost its data); beating again before it fetches")
        try:
            membership.beat_now()
        except _CONNECTION_ERRORS:
            raise
        except redis_errors.RedisError as exc:  # say, a read-only replica: wait, then again
            logger.warning("jobkit: heartbeat not written: %s", mask_secrets(str(exc)))
            self._waiting = True

    def _reconcile(self) -> None:
        """Hand back in-flight jobs that nothing in this process holds any more.

        That is a fetch whose reply a dropped connection lost (the job never reached Celery),
        and a plain-Celery ETA message, which Celery forgets at a reconnect (consumer.on_close
        keeps every other job). A tag seen unheld at two looks in a row, and older than
        ORPHAN_MIN_AGE_SECONDS, is such a job. Runs on the event loop before a fetch is sent,
        so no fetch reply is pending at that moment. First, acknowledgements a drop cut off
        are written.
        """
        now = monotonic()
        if now - self._reconciled_at < RECONCILE_EVERY_SECONDS:
            return
        self._reconciled_at = now
        client = self._create_client()
        membership.send_unsent_acks(client)
        held = client.zrange(self.unacked_index_key, 0, time.time() - ORPHAN_MIN_AGE_SECONDS,
                             byscore=True)
        unheld = {bytes_to_str(tag) for tag in held} - _tags_held_by_this_process(self)
        orphans, self._suspects = unheld & self._suspects, unheld - self._suspects
        if orphans:
            moved = hand_back(membership.identity().id, sorted(orphans), client=client)
            logger.warning("jobkit: %d in-flight jobs no longer held by this worker (dropped "
                           "at a reconnect) put back in their queues", moved)


def _tags_held_by_this_process(channel: Any) -> set[str]:
    """Delivery tags of every message Celery still holds here, of the channel's own, and of
    acknowledgements not yet written."""
    tags = set(channel.qos._delivered) | membership.unsent_acks
    for request in tuple(worker_state.requests.values()):  # reserved, running and ETA ones
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag is not None:
            tags.add(bytes_to_str(tag))
    return tags


class Channel(JobkitChannel, kombu_redis.Channel):
    from_transport_options = kombu_redis.Channel.from_transport_options + _JOBKIT_OPTIONS


class SentinelChannel(JobkitChannel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel, following the master.

    kombu asks the sentinels where the master is only when it connects. After `SENTINEL
    FAILOVER` the old master stays writable until Sentinel demotes it, seconds later, and
    whatever a worker did there in between is dropped at the demotion. So before a fetch, at
    most every MASTER_CHECK_SECONDS, this channel asks the sentinels; when the master moved
    it drops its connection, and the worker reconnects to the new master. A blocking read
    that the demotion interrupts (``UNBLOCKED``) is a lost connection too, not a crash.
    """

    from_transport_options = (kombu_redis.SentinelChannel.from_transport_options
                              + _JOBKIT_OPTIONS)
    master_name: str  # a transport option; kombu refuses to connect without it
    _master_checked_at = float("-inf")

    def _brpop_start(self, timeout: Any = None) -> None:
        self._follow_master()
        return super()._brpop_start(timeout)

    def _brpop_read(self, **options: Any) -> Any:
        connection = self.client.connection
        try:
            return super()._brpop_read(**options)
        except redis.ResponseError as exc:
            if not str(exc).startswith("UNBLOCKED"):
                raise
            connection.disconnect()
            raise redis.ConnectionError(f"Redis stopped being the master: {exc}") from None

    def _follow_master(self) -> None:
        now = monotonic()
        manager = getattr(self, "_async_sentinel_manager", None)
        connection = self.client.connection
        if now - self._master_checked_at < MASTER_CHECK_SECONDS or manager is None \
                or connection is None or connection.host is None:
            return
        self._master_checked_at = now
        try:
            master = tuple(manager.discover_master(self.master_name))
        except (redis.ConnectionError, redis.TimeoutError):
            return  # no master known right now: the connection in use says what goes on
        if master != (connection.host, connection.port):
            logger.warning("jobkit: the sentinels moved master %r from %s:%s to %s:%s; "
                           "reconnecting", self.master_name, connection.host,
                           connection.port, *master)
            connection.disconnect()
            raise redis.ConnectionError(f"master {self.master_name!r} moved to "
                                        f"{master[0]}:{master[1]}")


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport; a connection attempt waits for the sentinels to name a
    reachable master (up to MASTER_WAIT_SECONDS) instead of failing at once: Celery waits
    2, 4, 6... s between failed attempts, which would add up to long after the failover."""

    Channel = SentinelChannel

    def establish_connection(self) -> Any:
        deadline = monotonic() + MASTER_WAIT_SECONDS
        while True:
            try:
                return super().establish_connection()
            except self.connection_errors:
                if monotonic() >= deadline or _stopping():
                    raise
                time.sleep(MASTER_RETRY_SECONDS)


def _stopping() -> bool:
    return any(flag not in (None, False)
               for flag in (worker_state.should_stop, worker_state.should_terminate))
