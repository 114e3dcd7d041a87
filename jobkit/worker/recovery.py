"""Putting in-flight jobs back in their queues: a dead worker's (the reaper), or a live worker's
own at a clean stop and after a reconnect.

Why our own: kombu keeps every delivered message in one shared `unacked` hash and puts it back
only after `visibility_timeout` (an hour by default), whoever holds it, so a worker killed with
-9 leaves its jobs invisible for an hour, and a live worker's long job is handed out twice.
jobkit gives each worker process its own in-flight keys (transport.py) and a heartbeat
(heartbeat.py); any worker's poller puts back the jobs of a process whose heartbeat expired.

One Lua script does the whole move for a process: it re-checks the heartbeat inside the same
atomic step (a worker that came back is left alone), pushes each held message to the front of
its queue, removes exactly the entries it moved, and forgets the process only when nothing is
left. Two reapers cannot both move a message, and no lock is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from time import time

import redis

from jobkit import keys
from jobkit.job_sets import BURY_LUA, WAKE_LUA, dead_limits
from jobkit.queues import WAKE_TOKENS_MAX
from jobkit.redis_client import get_redis

__all__ = ["hand_back", "reap_dead_processes"]

logger = logging.getLogger(__name__)

# KEYS: unacked, unacked_index, heartbeat, processes, dead.
# ARGV: process id, check ('alive' = do nothing while the heartbeat exists), now, dead max jobs,
#       dead timeout, wake prefix, wake max, priority separator, then the tags ('*' = all).
_HAND_BACK = BURY_LUA + WAKE_LUA + """
local unacked, index, heartbeat, processes, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if ARGV[2] == 'alive' and redis.call('EXISTS', heartbeat) == 1 then return -1 end
local now, sep = tonumber(ARGV[3]), ARGV[8]

-- A record is '[' .. message .. ',' .. exchange .. ',' .. queue .. ']' (the fetch script's).
-- The message is cut out exactly as it was taken, never decoded and encoded again: cjson would
-- change numbers and empty arrays, and refuses Infinity, which Python's json writes.
local function parse(raw)
  local ok, record = pcall(cjson.decode, raw)
  if not ok or type(record) ~= 'table' then return nil end
  local message, exchange, queue = record[1], record[2], record[3]
  if type(message) ~= 'table' or type(message.properties) ~= 'table'
      or type(exchange) ~= 'string' or type(queue) ~= 'string' or queue == '' then
    return nil
  end
  local tail = ',' .. cjson.encode(exchange) .. ',' .. cjson.encode(queue) .. ']'
  if string.sub(raw, 1, 1) ~= '[' or string.sub(raw, -#tail) ~= tail then return nil end
  return string.sub(raw, 2, #raw - #tail), queue, tonumber(message.properties.priority) or 0
end

local tags = {}
if ARGV[9] == '*' then tags = redis.call('HKEYS', unacked) else
  for i = 9, #ARGV do tags[#tags + 1] = ARGV[i] end
end
local moved = 0
for _, tag in ipairs(tags) do
  local raw = redis.call('HGET', unacked, tag)
  if raw then
    local ok, message, queue, priority = pcall(parse, raw)
    if ok and message then
      local step = (priority >= 9 and 9) or (priority >= 6 and 6) or (priority >= 3 and 3) or 0
      local list = queue
      if step > 0 then list = queue .. sep .. step end
      redis.call('RPUSH', list, message)  -- the front: workers pop the right end
      wake(list, ARGV[6], ARGV[7], sep)
      moved = moved + 1
    else
      bury(dead, now, cjson.encode({message = raw, failed_at = now,
        error_class = 'jobkit.UnreadableMessage',
        error_message = 'unreadable in-flight record of worker ' .. ARGV[1]}), ARGV[4], ARGV[5])
    end
    redis.call('HDEL', unacked, tag)  -- only once the message is back, or in the dead set
    redis.call('ZREM', index, tag)
  end
end
if ARGV[9] == '*' and redis.call('HLEN', unacked) == 0
    and redis.call('EXISTS', heartbeat) == 0 then
  redis.call('DEL', unacked, index)
  redis.call('SREM', processes, ARGV[1])
end
return moved
"""


def hand_back(process_id: str, tags: Iterable[str] | None = None, *, if_dead: bool = False,
              client: redis.Redis | None = None) -> int:
    """Put back the in-flight jobs of `process_id` (only `tags`, or all), to the front of their
    queues; with `if_dead`, only if its heartbeat has expired. With all, a process left with
    nothing held and no heartbeat is forgotten. Returns how many moved, or -1
    when the process turned out to be alive."""
    client = client or get_redis()
    tag_args = ["*"] if tags is None else list(tags)
    if not tag_args:
        return 0
    script = client.register_script(_HAND_BACK)
    return int(script(
        keys=[keys.unacked(process_id), keys.unacked_index(process_id),
              keys.heartbeat(process_id), keys.PROCESSES, keys.DEAD],
        args=[process_id, "alive" if if_dead else "any", time(), *dead_limits(),
              keys.WAKE_PREFIX, WAKE_TOKENS_MAX, keys.PRIORITY_SEPARATOR, *tag_args]))


def reap_dead_processes(client: redis.Redis | None = None) -> int:
    """Put back the in-flight jobs of every process whose heartbeat expired; returns how many."""
    client = client or get_redis()
    ids = [i.decode(errors="replace") if isinstance(i, bytes) else i
           for i in client.smembers(keys.PROCESSES)]
    if not ids:
        return 0
    with client.pipeline(transaction=False) as pipe:
        for process_id in ids:
            pipe.exists(keys.heartbeat(process_id))
        alive = pipe.execute()
    restored = 0
    for process_id, is_alive in zip(ids, alive, strict=True):
        if is_alive:
            continue
        moved = hand_back(process_id, if_dead=True, client=client)
        if moved > 0:
            logger.warning("jobkit: process %s stopped beating; %d in-flight jobs put back in "
                           "their queues", process_id, moved)
            restored += moved
    return restored
