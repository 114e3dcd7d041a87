"""Resumable jobs: `IterableJob` and its helpers (docs/resumable.md)."""

from jobkit.iteration.job import Interrupted as Interrupted
from jobkit.iteration.job import IterableJob as IterableJob
from jobkit.iteration.job import IterationCancelled as IterationCancelled
from jobkit.iteration.job import indexed as indexed

__all__ = ["Interrupted", "IterableJob", "IterationCancelled", "indexed"]
