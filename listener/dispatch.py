"""The one seam between the listener and the worker: hand a complete study to the queue.

The concrete seam is :class:`worker.celery_app.StudyQueue` (Celery ``send_task`` of the
worker's study task by name; importing it pulls in Celery only, never torch). Tests pass
any callable of the :class:`Dispatcher` shape.
"""

from __future__ import annotations

from worker.celery_app import Dispatcher, StudyQueue

__all__ = ["Dispatcher", "StudyQueue"]
