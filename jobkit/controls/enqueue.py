"""Enqueueing a unique or debounced job: the check and the push in one Lua script.

Why one script: a lock taken in one round trip and a push sent in another would lose the job
if the process died in between (the lock would then refuse every copy until it expired), or
let two racing enqueues both push. The celery adapter queues these scripts in its pipeline, in
place of the plain push, so a bulk enqueue is still one round trip. They go as plain EVALSHA
(`ScriptCall.queue`): a redis-py Script in a pipeline costs a SCRIPT EXISTS round trip before
every pipeline; a Redis that lost its scripts (a restart) answers NoScriptError to that one
command, which was then not run, and the adapter sends it again (`ScriptCall.run`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import redis
from redis.client import Pipeline
from redis.commands.core import Script

from jobkit import keys
from jobkit.job_sets import WAKE_LUA
from jobkit.queues import WAKE_TOKENS_MAX
from jobkit.redis_client import script

__all__ = ["DEBOUNCE_KEEP_SECONDS", "ControlledPush", "ScriptCall"]

# How long after its window a debounce key is kept: a window whose job the poller has not
# moved yet (workers down) still takes the enqueues of its key for that long.
DEBOUNCE_KEEP_SECONDS = 3600

# KEYS: the lock, the target (queue list, or the scheduled set when ARGV[4] is a score), the
# queues set. ARGV: job id, lock ms, message or set member, score or "", queue, wake prefix,
# wake max, priority separator. Returns {1} when pushed, {0, holder's job id} when not.
_PUSH_UNIQUE = WAKE_LUA + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, redis.call('GET', KEYS[1]) or ''}
end
if ARGV[4] == '' then
  redis.call('LPUSH', KEYS[2], ARGV[3])
  wake(KEYS[2], ARGV[6], ARGV[7], ARGV[8])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
end
redis.call('SADD', KEYS[3], ARGV[5])
return {1}
"""

# KEYS: the debounce key, the scheduled set, the queues set. ARGV: the set member, the end of
# a new window (a Unix time), the key's lifetime (ms), queue. The job pending in the key's
# window (its member still in the scheduled set) is replaced by this one, due at the same
# time; otherwise this job opens a new window. Returns 1 when it replaced one, else 0.
_PUSH_DEBOUNCED = """
local pending = redis.call('GET', KEYS[1])
redis.call('SADD', KEYS[3], ARGV[4])
if pending then
  local due = redis.call('ZSCORE', KEYS[2], pending)
  if due and redis.call('ZREM', KEYS[2], pending) == 1 then
    redis.call('ZADD', KEYS[2], due, ARGV[1])
    redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
    return 1
  end
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 0
"""


class ScriptCall(NamedTuple):
    """One call of a script, to queue in a pipeline and to send again if Redis lost it."""

    script: Script
    keys: list[str]
    args: list[Any]

    def queue(self, pipe: Pipeline) -> int:
        """Queue it as EVALSHA in `pipe`; returns its place in the pipeline's replies."""
        pipe.evalsha(self.script.sha, len(self.keys), *self.keys, *self.args)
        return len(pipe.command_stack) - 1

    def run(self, client: redis.Redis) -> Any:
        """Send it alone (loading the script when Redis does not have it)."""
        return self.script(keys=self.keys, args=self.args, client=client)


class ControlledPush:
    """The two scripts, registered and loaded into Redis once per process (so a first enqueue
    keeps its place in a bulk enqueue; only after a Redis restart is one sent again)."""

    def __init__(self, client: redis.Redis) -> None:
        self._unique, self._debounced = script(_PUSH_UNIQUE), script(_PUSH_DEBOUNCED)
        for lua in (_PUSH_UNIQUE, _PUSH_DEBOUNCED):
            client.script_load(lua)

    def unique(self, unique: dict[str, Any], job_id: str, target: str, item: str,
               score: float | None, queue: str, now: float) -> ScriptCall:
        """The unique push: to list `target` now, or to the scheduled set `target` at `score`.
        The lock lasts `unique["for"]` seconds from when the job is due."""
        lock_seconds = unique["for"] + max(0.0, (score or now) - now)
        return ScriptCall(self._unique, [keys.unique(unique["key"]), target, keys.QUEUES],
                          [job_id, max(1, round(lock_seconds * 1000)), item,
                           "" if score is None else repr(score), queue, keys.WAKE_PREFIX,
                           WAKE_TOKENS_MAX, keys.PRIORITY_SEPARATOR])

    def debounced(self, debounce: dict[str, Any], member: str, window_end: float, queue: str,
                  now: float) -> ScriptCall:
        """The debounced push: a scheduled-set member, due at the end of the window it joins
        (`window_end` when it opens one)."""
        keep_ms = round((window_end - now + DEBOUNCE_KEEP_SECONDS) * 1000)
        return ScriptCall(self._debounced,
                          [keys.debounce(debounce["key"]), keys.SCHEDULE, keys.QUEUES],
                          [member, repr(window_end), max(1, keep_ms), queue])
