"""The periodic scheduler (jobkit.periodic) in every worker, for as long as the worker runs."""

from __future__ import annotations

from typing import Any

from celery import bootsteps

from jobkit.periodic import PeriodicScheduler

__all__ = ["PeriodicStep"]


class PeriodicStep(bootsteps.StartStopStep):
    """Starts this worker's periodic scheduler; every worker has one, none leads."""

    label = "jobkit periodic scheduler"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.scheduler: PeriodicScheduler | None = None

    def start(self, parent: Any) -> None:
        self.scheduler = PeriodicScheduler()
        self.scheduler.start()

    def stop(self, parent: Any) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
