"""Django's tasks framework (`django.tasks`, or the `django_tasks` backport) on jobkit:
``TASKS = {"default": {"BACKEND": "jobkit.contrib.django.JobkitBackend"}}``. docs/django.md."""

from jobkit.contrib.django.backend import JobkitBackend as JobkitBackend
from jobkit.contrib.django.runner import DjangoTaskJob as DjangoTaskJob

__all__ = ["DjangoTaskJob", "JobkitBackend"]
