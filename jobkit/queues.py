"""Queue conventions and the order in which a worker asks its queues for a job.

The lists themselves are named in keys.py (kombu's layout, one list per priority step; lower
steps are fetched first, so a lower priority number runs first, as in Active Job's backends).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Protocol

__all__ = [
    "DEFAULT_QUEUE",
    "MAILERS_QUEUE",
    "STORAGE_ANALYSIS_QUEUE",
    "STORAGE_PURGE_QUEUE",
    "WAKE_TOKENS_MAX",
    "fetch_order",
]

# The conventional queues (Rails'): everything, mail, Active-Storage-style analysis and purge.
DEFAULT_QUEUE = "default"
MAILERS_QUEUE = "mailers"
STORAGE_ANALYSIS_QUEUE = "storage_analysis"
STORAGE_PURGE_QUEUE = "storage_purge"
WAKE_TOKENS_MAX = 100  # per queue; enough to wake every idle worker of a busy queue


class RandomSource(Protocol):
    """What fetch_order draws from: the random module itself, or a seeded random.Random."""

    def random(self) -> float: ...


def fetch_order(queues: Iterable[str], weights: Mapping[str, int], order: str,
                rng: RandomSource = random) -> list[str]:
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
