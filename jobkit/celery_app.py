"""jobkit's Celery app for the current settings: `celery -A jobkit.celery_app flower` (or
`inspect`, `events`) finds it here as `app`. Built in jobkit/worker/app.py."""

from jobkit.config import current_settings
from jobkit.worker.app import apply_settings, create_app

__all__ = ["app", "apply_settings"]

app = create_app(current_settings())
