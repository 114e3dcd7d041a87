"""A minimal Django project for tests/test_django_tasks.py: settings and @task functions that
a real `jobkit worker` runs (DJANGO_SETTINGS_MODULE=tests.django_tasks_app.settings)."""
