"""jobkit: Active Job and Sidekiq ergonomics on Celery + Redis."""

import importlib.metadata

from jobkit import iteration as iteration
from jobkit import limiter as limiter
from jobkit.adapters import cancel as cancel
from jobkit.adapters import use_adapter as use_adapter
from jobkit.adapters.base import Adapter as Adapter
from jobkit.arguments import Serializer as Serializer
from jobkit.arguments import register_serializer as register_serializer
from jobkit.batch.batch import Batch as Batch
from jobkit.batch.scope import OpenBatch as OpenBatch
from jobkit.batch.state import BatchStatus as BatchStatus
from jobkit.callbacks import after_enqueue as after_enqueue
from jobkit.callbacks import after_perform as after_perform
from jobkit.callbacks import around_enqueue as around_enqueue
from jobkit.callbacks import around_perform as around_perform
from jobkit.callbacks import before_enqueue as before_enqueue
from jobkit.callbacks import before_perform as before_perform
from jobkit.cancellation import Cancellation as Cancellation
from jobkit.config import Settings as Settings
from jobkit.config import configure as configure
from jobkit.controls import Concurrency as Concurrency
from jobkit.controls import Debounce as Debounce
from jobkit.errors import Abort as Abort
from jobkit.errors import ConfigError as ConfigError
from jobkit.errors import DeserializationError as DeserializationError
from jobkit.errors import JobClassError as JobClassError
from jobkit.errors import JobKilled as JobKilled
from jobkit.errors import JobkitError as JobkitError
from jobkit.errors import NotRecordingError as NotRecordingError
from jobkit.errors import NotReplicatedError as NotReplicatedError
from jobkit.errors import NotUniqueError as NotUniqueError
from jobkit.errors import OverLimit as OverLimit
from jobkit.errors import PayloadError as PayloadError
from jobkit.errors import SerializationError as SerializationError
from jobkit.iteration import IterableJob as IterableJob
from jobkit.job import ConfiguredJob as ConfiguredJob
from jobkit.job import Job as Job
from jobkit.job import perform_all_later as perform_all_later
from jobkit.references import DjangoLocator as DjangoLocator
from jobkit.references import GlobalID as GlobalID
from jobkit.references import Locator as Locator
from jobkit.references import SQLAlchemyLocator as SQLAlchemyLocator
from jobkit.references import register_locator as register_locator
from jobkit.retries import discard_on as discard_on
from jobkit.retries import retry_on as retry_on
from jobkit.time_limits import SoftTimeLimitExceeded as SoftTimeLimitExceeded

try:
    __version__ = importlib.metadata.version("jobkit")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Abort",
    "Adapter",
    "Cancellation",
    "Batch",
    "BatchStatus",
    "Concurrency",
    "ConfigError",
    "ConfiguredJob",
    "Debounce",
    "DeserializationError",
    "DjangoLocator",
    "GlobalID",
    "IterableJob",
    "Job",
    "JobClassError",
    "JobKilled",
    "NotRecordingError",
    "NotReplicatedError",
    "NotUniqueError",
    "OpenBatch",
    "OverLimit",
    "JobkitError",
    "Locator",
    "PayloadError",
    "SQLAlchemyLocator",
    "SerializationError",
    "Serializer",
    "Settings",
    "SoftTimeLimitExceeded",
    "__version__",
    "after_enqueue",
    "after_perform",
    "around_enqueue",
    "around_perform",
    "before_enqueue",
    "before_perform",
    "cancel",
    "configure",
    "discard_on",
    "iteration",
    "limiter",
    "perform_all_later",
    "register_locator",
    "register_serializer",
    "retry_on",
    "use_adapter",
]
