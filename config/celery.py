"""The Celery app: configured from Django settings (the CELERY_* names), tasks found in the apps."""

import os

from celery import Celery

from config import task_signals  # noqa: F401  (connects its receivers: request ids, task metrics)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Every task retries through a database outage instead of failing (config/outages.py).
app = Celery("weightgate", task_cls="config.outages:RetryOnOutageTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
