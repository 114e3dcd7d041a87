"""Queue names and the Redis lists behind them.

kombu's Redis transport keeps one list per queue and priority step: priority 0-2 in ``<queue>``,
3-5 in ``<queue>\\x06\\x163``, 6-8 in ``...6``, 9 in ``...9``, and fetches lower steps first. So a
lower priority number runs first, as in Active Job's backends that support priority.
"""

from __future__ import annotations

from bisect import bisect

__all__ = ["PRIORITY_STEPS", "list_key", "list_keys"]

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu.transport.redis.PRIORITY_STEPS
PRIORITY_SEPARATOR = "\x06\x16"  # kombu.transport.redis.Channel.sep
MIN_PRIORITY, MAX_PRIORITY = 0, 9


def list_key(queue: str, priority: int | None) -> str:
    """The Redis list a message of this priority waits in (kombu's `_q_for_pri`)."""
    if not priority:
        return queue
    clamped = min(max(priority, MIN_PRIORITY), MAX_PRIORITY)
    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, clamped) - 1]
    return f"{queue}{PRIORITY_SEPARATOR}{step}" if step else queue


def list_keys(queue: str) -> list[str]:
    """Every list of a queue, first-served first."""
    return [list_key(queue, step) for step in PRIORITY_STEPS]
