"""The delivery worker's Celery app: ``triage delivery-worker`` runs it with the sweep.

Separate from the inference app (``worker.app``) so a delivery worker never loads torch or
a model bundle: it only reads the outbox and the result spool and talks to destinations.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from sqlalchemy.exc import OperationalError

from db.engine import make_engine, make_session_factory
from triage.queue import DELIVER_TASK, make_celery
from triage.settings import get_settings
from worker.delivery.runner import DeliveryLoop, DeliveryRunner

log = logging.getLogger(__name__)

app = make_celery(get_settings())
_runners: dict[int, DeliveryRunner] = {}
_lock = threading.Lock()


def get_runner() -> DeliveryRunner:
    """This process's runner (rebuilt in a forked child, keyed by pid)."""
    with _lock:
        pid = os.getpid()
        if pid not in _runners:
            settings = get_settings()
            engine = make_engine(settings.database.url.get_secret_value())
            _runners[pid] = DeliveryRunner(make_session_factory(engine), settings)
        return _runners[pid]


def start_sweep() -> DeliveryLoop:
    """Start the timer that sends every due delivery (retries, and rows whose wake-up was lost)."""
    loop = DeliveryLoop(get_runner(), get_settings().delivery.poll_seconds)
    loop.start()
    return loop


@app.task(
    name=DELIVER_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    max_retries=10,
)
def deliver(delivery_ids: list[int]) -> str:
    """Send the named deliveries now if they are due (the sweep covers anything missed)."""
    settled = get_runner().run_due(ids=[int(i) for i in delivery_ids])
    summary = ", ".join(f"{s.delivery_id}:{s.state}" for s in settled) or "nothing due"
    log.info("deliver %s: %s", delivery_ids, summary)
    return summary


__all__: list[Any] = ["app", "deliver", "start_sweep"]
