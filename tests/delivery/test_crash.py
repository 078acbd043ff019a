"""The delivery worker SIGKILLed mid-send: the destination ends with one acknowledged copy.

A real ``triage delivery-worker`` process sends to a pynetdicom SCP that holds the first
C-STORE open; the process group is killed while it waits, a new delivery worker starts,
and the row (left ``sending``) is sent again once its lease has run out.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select

from db.models import AuditEvent
from db.vocabulary import AuditEventType, DeliveryState
from tests.delivery.conftest import Outbox
from tests.delivery.peers import PynetdicomScp
from tests.worker.conftest import worker_process


class StallingScp(PynetdicomScp):
    """Holds the first C-STORE for ``stall`` seconds; records each store and its association."""

    def __init__(self, stall: float) -> None:
        super().__init__(aet="STALLING")
        self.stall = stall
        self.entered = threading.Event()
        self.stores: list[tuple[str, Any]] = []  # (SOP Instance UID, association)

    def _on_store(self, event: Any) -> int:
        ds: Dataset = event.dataset
        if not self.entered.is_set():
            self.entered.set()
            time.sleep(self.stall)
        self.stores.append((str(ds.SOPInstanceUID), event.assoc))
        return 0x0000

    def acknowledged(self) -> list[str]:
        """UIDs stored on associations the sender released: it read every answer on them."""
        return [uid for uid, assoc in self.stores if assoc.is_released]


def test_killed_mid_send_is_sent_again_and_acknowledged_once(
    make_outbox: Callable[..., Outbox], tmp_path: Path, poll: Callable[..., Any]
) -> None:
    scp = StallingScp(stall=3.0)
    scp.start()
    box = make_outbox(delivery_ack_timeout=1.0, delivery_poll_seconds=0.2)
    [delivery_id] = box.queue(("dicom", scp.destination))
    try:
        with worker_process(
            box.settings, log=tmp_path / "first.log", command=("delivery-worker",)
        ) as first:
            assert scp.entered.wait(60), "the delivery worker never sent"
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        [row] = box.rows()
        assert row.state == DeliveryState.SENDING and row.attempts == 1
        time.sleep(3.5)  # let the held C-STORE finish on a dead association
        with worker_process(
            box.settings, log=tmp_path / "second.log", command=("delivery-worker",)
        ):
            poll(
                lambda: box.rows()[0].state == DeliveryState.SENT,
                timeout=60,
                what="the re-send after the lease ran out",
            )
    finally:
        scp.stop()
    [row] = box.rows()
    assert row.id == delivery_id and row.attempts == 2
    first, second = "1.2.826.0.1.3680043.8.498.4244.1", "1.2.826.0.1.3680043.8.498.4244.2"
    # the destination saw the first document twice under one SOP Instance UID (one instance
    # at a PACS), and acknowledged each document once to a sender that was alive to read it
    assert [uid for uid, _ in scp.stores] == [first, first, second]
    assert sorted(scp.acknowledged()) == [first, second]
    with box.sessions() as session:
        delivered = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == AuditEventType.RESULT_DELIVERED)
        ).all()
    assert [event.detail["delivery_id"] for event in delivered] == [delivery_id]
