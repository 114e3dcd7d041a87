"""Django settings for the JobkitBackend tests (and for the worker those tests start)."""

SECRET_KEY = "jobkit-tests-only"
USE_TZ = True
INSTALLED_APPS = ["django_tasks", "tests.django_app", "tests.django_tasks_app"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

TASKS = {
    "default": {
        "BACKEND": "jobkit.contrib.django.JobkitBackend",
        "QUEUES": ["default", "ordered"],
        "OPTIONS": {"RESULT_TTL": 600},
    },
    "retrying": {
        "BACKEND": "jobkit.contrib.django.JobkitBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"MAX_RETRIES": 1, "RESULT_TTL": 12},  # shorter than a retry's wait
    },
}
