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

import os
import uuid
from dataclasses import dataclass
from time import monotonic
from typing import Any, Protocol

from celery import Celery
from kombu.transport import filesystem

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


class _AtomicFilesystemChannel(filesystem.Channel):
    """Kombu's file-system channel with messages written whole before they appear.

    Kombu writes a message straight under its final name, and a consumer polling the
    folder may move and read it before the bytes are in: an empty message, which stops a
    Celery worker ("Unrecoverable error: JSONDecodeError"). Here the message is written
    under a name no consumer matches (a leading dot), then renamed into place.
    """

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(temporary, "wb") as handle:
                handle.write(filesystem.str_to_bytes(filesystem.dumps(payload)))
            os.replace(temporary, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class AtomicFilesystemTransport(filesystem.Transport):
    """The embedded broker's transport (``filesystem://``), with atomic message files."""

    Channel = _AtomicFilesystemChannel


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
        app.conf.broker_transport = AtomicFilesystemTransport
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
