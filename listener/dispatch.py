"""The one seam between the listener and the worker: hand a complete study to the queue."""

from __future__ import annotations

import logging
from typing import Protocol

from celery import Celery

from worker.celery_app import INFERENCE_QUEUE, PROCESS_STUDY_TASK

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    """Sends a study version to inference; raises if the queue cannot take it."""

    def __call__(self, study_id: int, study_uid: str, version: int) -> str: ...


class CeleryDispatcher:
    """Dispatch by Celery ``send_task`` of the worker's study task (by name, no worker import)."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def __call__(self, study_id: int, study_uid: str, version: int) -> str:
        result = self._app.send_task(
            PROCESS_STUDY_TASK, args=[study_id, version], queue=INFERENCE_QUEUE
        )
        log.info("queued study", extra={"study_uid": study_uid, "task_id": result.id})
        return str(result.id)
