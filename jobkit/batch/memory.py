"""Batches in memory, for the test modes (jobkit.adapters.test): the rules of state.py's Lua
scripts, applied to dicts. A callback due is handed to `push` (the adapter records it, or in
inline mode performs it)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobkit.batch.state import BatchStatus, Outcome

if TYPE_CHECKING:
    from jobkit.job import Job

__all__ = ["MemoryBatches"]

_FINAL = ("succeeded", "discarded")


@dataclass
class _Batch:
    data: dict[str, str]  # the fields of the Redis hash (state.BatchStatus.from_hash)
    members: dict[str, str] = field(default_factory=dict)


class MemoryBatches:
    """The test adapter's batches; `wire_copy` makes a callback's payload as a worker gets it."""

    def __init__(self, push: Callable[[dict[str, Any]], None],
                 wire_copy: Callable[[Job], dict[str, Any]]) -> None:
        self._push = push
        self._wire_copy = wire_copy
        self._batches: dict[str, _Batch] = {}

    def callback_entry(self, job: Job) -> str:
        payload = self._wire_copy(job)
        return json.dumps({"payload": payload, "job_class": payload["job_class"]})

    def create(self, batch_id: str, parent: str | None, description: str,
               callbacks: Mapping[str, str]) -> None:
        if parent is not None and parent not in self._batches:
            raise LookupError(f"parent batch {parent} not found")
        data = {"created_at": str(time.time()), "total": "0", "description": description,
                **({"parent": parent} if parent is not None else {}),
                **{f"on_{event}": entry for event, entry in callbacks.items()}}
        self._batches[batch_id] = _Batch(data)

    def count(self, batch_id: str, members: int) -> None:
        """Members enqueued (the adapter's `enqueue`)."""
        if batch_id in self._batches:
            self._add(batch_id, "total", members)

    def seal(self, batch_id: str, aborted: bool) -> None:
        batch = self._batches.get(batch_id)
        if batch is None:
            return
        if aborted:
            batch.data["aborted"] = "1"
        if "sealed" not in batch.data:  # a child counts in its parent once its block ended
            batch.data["sealed"] = "1"
            parent = batch.data.get("parent")
            if parent is not None and parent in self._batches:
                self._add(parent, "total", 1)
        self._propagate(batch_id)

    def record(self, batch_id: str, member: str, outcome: Outcome) -> None:
        if self._move(batch_id, member, outcome):
            self._propagate(batch_id)

    def status(self, batch_id: str) -> BatchStatus | None:
        batch = self._batches.get(batch_id)
        return None if batch is None else BatchStatus.from_hash(batch_id, batch.data)

    def _add(self, batch_id: str, name: str, by: int) -> None:
        data = self._batches[batch_id].data
        data[name] = str(int(data.get(name, "0")) + by)

    def _move(self, batch_id: str, member: str, outcome: str) -> bool:
        batch = self._batches.get(batch_id)
        if batch is None:
            return False
        old = batch.members.get(member)
        if old == outcome or old in _FINAL:
            return False
        batch.members[member] = outcome
        if old is not None:
            self._add(batch_id, old, -1)
        self._add(batch_id, outcome, 1)
        return True

    def _fire(self, batch_id: str, event: str) -> None:
        data = self._batches[batch_id].data
        if f"fired_{event}" in data:
            return
        data[f"fired_{event}"] = str(time.time())
        entry = data.get(f"on_{event}")
        if entry is not None:
            self._push(json.loads(entry)["payload"])

    def _settle(self, batch_id: str) -> str | None:
        status = BatchStatus.from_hash(batch_id, self._batches[batch_id].data)
        if status.dead > 0 and status.sealed and not status.aborted:
            self._fire(batch_id, "death")
        if not status.complete:
            return None
        if not status.aborted:
            self._fire(batch_id, "complete")
            if status.dead == 0:
                self._fire(batch_id, "success")
        return "dead" if status.aborted or status.dead else "succeeded"

    def _propagate(self, batch_id: str) -> None:
        while True:
            outcome = self._settle(batch_id)
            parent = self._batches[batch_id].data.get("parent")
            if outcome is None or parent is None or not self._move(parent, batch_id, outcome):
                return
            batch_id = parent
