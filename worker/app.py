"""The worker's Celery app with its tasks registered: ``celery -A worker.app worker``."""

from __future__ import annotations

from triage.settings import get_settings
from worker.celery_app import make_celery
from worker.tasks import register_tasks

app = make_celery(get_settings())
register_tasks(app)
