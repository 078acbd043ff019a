"""The queue contract: task names routed to their queues; embedded messages appear whole."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from triage.queue import (
    DELIVER_TASK,
    DELIVERY_QUEUE,
    INFERENCE_QUEUE,
    AtomicFilesystemTransport,
    DeliveryQueue,
    StudyQueue,
    make_celery,
)
from triage.settings import Settings


def test_embedded_broker_messages_are_never_seen_half_written(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    app = make_celery(settings)
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, AtomicFilesystemTransport)
    folder = Path(settings.broker_dir) / "queue"
    seen: list[bytes] = []
    stop = threading.Event()

    def watch() -> None:  # a consumer's view: every file that carries a queue's name
        while not stop.is_set():
            for path in folder.glob("*.msg"):
                if not path.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):  # consumed meanwhile
                        seen.append(path.read_bytes())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for study_id in range(60):
            StudyQueue(app)(study_id, "1.2.3", 1)
            DeliveryQueue(app)([study_id])
    finally:
        stop.set()
        watcher.join()
    assert seen and all(json.loads(data) for data in seen)
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 120 and not [n for n in names if n.startswith(".")]
    assert sum(n.endswith(f".{DELIVERY_QUEUE}.msg") for n in names) == 60
    assert sum(n.endswith(f".{INFERENCE_QUEUE}.msg") for n in names) == 60
    assert app.conf.task_routes[DELIVER_TASK] == {"queue": DELIVERY_QUEUE}
