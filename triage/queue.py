"""The queue contract between the listener and the worker, and the Celery app both build.

One neutral home (neither ``listener`` nor ``worker``) so the listener can hand a study to
inference without importing any worker code, and so the task name, queue names and the
message's arguments cannot drift apart between the sender and the consumer. Imports
Celery and the settings, nothing heavier: importing it never loads torch.

Production uses Redis (``TRIAGE_BROKER_URL=redis://127.0.0.1:6379/0``); the embedded
default is Kombu's file-system transport under ``VAR_DIR/broker``, which needs no server
and survives restarts because messages are files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from celery import Celery

from triage.settings import Settings

PROCESS_STUDY_TASK = "worker.process_study"
"""Name of the study task; its arguments are :meth:`StudyTaskArgs.as_args`."""
INFERENCE_QUEUE = "inference"
DELIVER_TASK = "worker.deliver"
"""Name of the delivery wake-up task; its argument is the list of outbox row ids to send."""
DELIVERY_QUEUE = "delivery"


@dataclass(frozen=True)
class StudyTaskArgs:
    """The message of :data:`PROCESS_STUDY_TASK`: which version of which study to judge.

    The version is part of the message so a worker can skip a study that late images
    have since made stale (it will get the newer version's own message).
    """

    study_id: int
    version: int

    def as_args(self) -> list[int]:
        """Positional Celery arguments, JSON-serialisable."""
        return [self.study_id, self.version]


def make_celery(settings: Settings) -> Celery:
    """Build a Celery app bound to ``settings``' broker, with exactly-once-friendly options."""
    app = Celery("pacs_triage", broker=settings.broker.url.get_secret_value(), set_as_current=False)
    transport_options: dict[str, object] = {
        "visibility_timeout": settings.broker.visibility_timeout
    }
    if settings.broker.url.get_secret_value().startswith("filesystem://"):
        folder = settings.broker_dir.resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options.update(
            data_folder_in=str(folder / "queue"),
            data_folder_out=str(folder / "queue"),
            processed_folder=str(folder / "processed"),
            control_folder=str(folder / "control"),
            store_processed=False,
            polling_interval=0.1,  # file polling; Redis needs none (BRPOP)
        )
    app.conf.update(
        broker_transport_options=transport_options,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=INFERENCE_QUEUE,
        task_routes={
            PROCESS_STUDY_TASK: {"queue": INFERENCE_QUEUE},
            DELIVER_TASK: {"queue": DELIVERY_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_time_limit=settings.worker.task_time_limit,
        task_soft_time_limit=settings.worker.task_time_limit * 0.9,
        task_acks_on_failure_or_timeout=True,
        worker_concurrency=settings.worker.concurrency,
        result_backend=None,
        task_ignore_result=True,
    )
    return app


class Dispatcher(Protocol):
    """Sends a study version to inference and returns the task id; raises if it cannot."""

    def __call__(self, study_id: int, study_uid: str, version: int) -> str: ...


class StudyQueue:
    """Sends a study version to the inference queue by task name (no worker code imported).

    This is the one dispatch seam: the listener calls it on completion and the reconciler
    on re-queue. Raises whatever the broker raises when it cannot take the message.
    """

    def __init__(self, app: Celery) -> None:
        self._app = app

    def __call__(self, study_id: int, study_uid: str, version: int) -> str:
        result = self._app.send_task(
            PROCESS_STUDY_TASK,
            args=StudyTaskArgs(study_id, version).as_args(),
            queue=INFERENCE_QUEUE,
        )
        return str(result.id)


class DeliveryQueue:
    """Wakes the delivery worker for outbox rows just committed (by task name, no import).

    Only a hint for speed: the outbox is the truth, and the delivery worker's sweep sends
    every due row even when this message is lost.
    """

    def __init__(self, app: Celery) -> None:
        self._app = app

    def __call__(self, delivery_ids: list[int]) -> str:
        result = self._app.send_task(DELIVER_TASK, args=[delivery_ids], queue=DELIVERY_QUEUE)
        return str(result.id)
