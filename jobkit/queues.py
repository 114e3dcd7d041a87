"""Queue names and the Redis lists behind them.

kombu's Redis transport keeps one list per queue and priority step: priority 0-2 in ``<queue>``,
3-5 in ``<queue>\\x06\\x163``, 6-8 in ``...6``, 9 in ``...9``, and fetches lower steps first. So a
lower priority number runs first, as in Active Job's backends that support priority.
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Iterable, Mapping

__all__ = [
    "DEFAULT_QUEUE",
    "MAILERS_QUEUE",
    "PAUSED_KEY",
    "PRIORITY_STEPS",
    "QUEUES_KEY",
    "STORAGE_ANALYSIS_QUEUE",
    "STORAGE_PURGE_QUEUE",
    "WAKE_TOKENS_MAX",
    "fetch_order",
    "list_key",
    "list_keys",
    "wake_key",
]

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu.transport.redis.PRIORITY_STEPS
PRIORITY_SEPARATOR = "\x06\x16"  # kombu.transport.redis.Channel.sep
MIN_PRIORITY, MAX_PRIORITY = 0, 9
# The conventional queues (Rails'): everything, mail, Active-Storage-style analysis and purge.
DEFAULT_QUEUE = "default"
MAILERS_QUEUE = "mailers"
STORAGE_ANALYSIS_QUEUE = "storage_analysis"
STORAGE_PURGE_QUEUE = "storage_purge"
QUEUES_KEY = "jobkit:queues"  # every queue a job was ever pushed to
PAUSED_KEY = "jobkit:paused"  # queues workers must not fetch from (dashboard: pause/resume)
WAKE_TOKENS_MAX = 100  # per queue; enough to wake every idle worker of a busy queue


def list_key(queue: str, priority: int | None) -> str:
    """The Redis list a message of this priority waits in (kombu's `_q_for_pri`)."""
    if not priority:
        return queue
    clamped = min(max(priority, MIN_PRIORITY), MAX_PRIORITY)
    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, clamped) - 1]
    return f"{queue}{PRIORITY_SEPARATOR}{step}" if step else queue


def wake_key(queue: str) -> str:
    """A list of tokens, one pushed with each job, that idle workers block on (transport.py)."""
    return f"jobkit:wake:{queue}"


def list_keys(queue: str) -> list[str]:
    """Every list of a queue, first-served first."""
    return [list_key(queue, step) for step in PRIORITY_STEPS]


def fetch_order(queues: Iterable[str], weights: Mapping[str, int], order: str,
                rng: random.Random | random.Random = random) -> list[str]:
    """The queues to ask, first to last, for one fetch.

    ``strict``: as given, so a later queue is served only when every earlier one is empty.
    ``weighted``: a fresh weighted shuffle per fetch (a queue of weight 3 leads three times as
    often as one of weight 1), so no queue starves.
    """
    names = list(queues)
    if order != "weighted" or len(names) < 2:
        return names
    # Weighted sampling without replacement (Efraimidis-Spirakis): key = U ** (1 / weight).
    keyed = [(rng.random() ** (1.0 / max(weights.get(name, 1), 1)), name) for name in names]
    return [name for _, name in sorted(keyed, reverse=True)]
