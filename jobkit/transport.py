"""kombu's Redis transport with Sidekiq's queue order on the fetch path.

Why our own: kombu rotates queues round-robin and orders BRPOP keys priority-major (every
queue's priority 0, then every queue's priority 3, ...). Sidekiq users expect strict order (a
later queue only when all earlier ones are empty) or weighted order. Redis BRPOP serves the first
non-empty key it is given, so building the key list ourselves, queue-major, gives both.
Checked against kombu 5.7 (`Channel._brpop_start`); the version is pinned in pyproject.toml.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from kombu.transport import redis as kombu_redis

from jobkit.queues import PRIORITY_STEPS, fetch_order, list_key

__all__ = ["Channel", "Transport"]


class Channel(kombu_redis.Channel):
    #: {queue: weight} and "strict" | "weighted", from broker_transport_options.
    jobkit_queue_weights: dict[str, int] = {}
    jobkit_queue_order: str = "strict"

    from_transport_options = kombu_redis.Channel.from_transport_options + (
        "jobkit_queue_weights",
        "jobkit_queue_order",
    )

    def _fetch_keys(self) -> list[str]:
        active = self.active_queues
        configured = [q for q in self.jobkit_queue_weights if q in active]
        queues = configured + [q for q in active if q not in self.jobkit_queue_weights]
        ordered = fetch_order(queues, self.jobkit_queue_weights, self.jobkit_queue_order)
        return [list_key(queue, step) for queue in ordered for step in PRIORITY_STEPS]

    def _brpop_start(self, timeout: Any = None) -> None:
        keys = self._fetch_keys()
        if not keys:
            return
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        command = ["BRPOP", *keys, self.brpop_timeout if timeout is None else timeout or 0]
        if self.global_keyprefix:
            command = self.client._prefix_args(command)
        self.client.connection.send_command(*command)


class Transport(kombu_redis.Transport):
    Channel = Channel
