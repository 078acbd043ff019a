"""The outbox runner against real destinations: sent once, retried with backoff, dead with why."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from db.models import AuditEvent
from db.vocabulary import AuditEventType, DeliveryState, Priority
from tests.delivery.conftest import Outbox
from tests.delivery.peers import (
    DcmtkStoreScp,
    HookServer,
    MllpServer,
    PynetdicomScp,
    free_port,
)

SENT, RETRYING, DEAD = DeliveryState.SENT, DeliveryState.RETRYING, DeliveryState.DEAD


def run_until_settled(box: Outbox, *, timeout: float = 30.0) -> None:
    """Run the outbox as the delivery worker's sweep does, until nothing is left to send."""
    runner = box.runner()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runner.run_due()
        if all(row.state in (SENT, DEAD) for row in box.rows()):
            return
        time.sleep(0.1)
    raise AssertionError(f"not settled: {[(r.id, r.state, r.last_error) for r in box.rows()]}")


def test_dicom_store_down_then_up_is_delivered_once(
    make_outbox: Callable[..., Outbox], tmp_path: Path
) -> None:
    scp = DcmtkStoreScp(tmp_path / "pacs")
    box = make_outbox(delivery_backoff_seconds=0.5, delivery_backoff_max_seconds=1.0)
    [delivery_id] = box.queue(("dicom", scp.destination))
    runner = box.runner()
    runner.run_due()  # the PACS is down: no association
    [row] = box.rows()
    assert row.state == RETRYING and row.attempts == 1
    assert "no association" in (row.last_error or "") or "cannot connect" in (row.last_error or "")
    assert box.study_state() == "predicted"
    scp.start()
    try:
        run_until_settled(box)
    finally:
        scp.stop()
    [row] = box.rows()
    assert row.state == SENT and row.acknowledged_at is not None and row.attempts >= 2
    received = scp.received()
    assert sorted(str(ds.SOPInstanceUID) for ds in received) == [
        "1.2.826.0.1.3680043.8.498.4244.1",
        "1.2.826.0.1.3680043.8.498.4244.2",
    ]
    assert box.study_state() == "delivered"
    runner.run_due()  # nothing due: a sent row is never sent again
    assert len(scp.received()) == 2 and box.rows()[0].attempts == row.attempts


def test_dicom_failure_status_is_dead_with_the_status(make_outbox: Callable[..., Outbox]) -> None:
    scp = PynetdicomScp(store_status=0xA700)
    scp.start()
    try:
        box = make_outbox()
        box.queue(("dicom", scp.destination))
        box.runner().run_due()
    finally:
        scp.stop()
    [row] = box.rows()
    assert row.state == DEAD and row.attempts == 1
    assert "status 0xA700" in (row.last_error or "")
    assert box.study_state() == "predicted"  # not every destination acknowledged
    with box.sessions() as session:
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == AuditEventType.DELIVERY_FAILED)
        ).all()
    assert event.detail["delivery_id"] == row.id and "0xA700" in event.detail["reason"]


def test_hl7_nak_then_ack_is_delivered_once(make_outbox: Callable[..., Outbox]) -> None:
    server = MllpServer(["AE", "AA"])
    server.start()
    try:
        box = make_outbox()
        box.queue(("hl7", server.destination))
        run_until_settled(box)
    finally:
        server.stop()
    [row] = box.rows()
    assert row.state == SENT and row.attempts == 2
    assert len(server.messages) == 2 and len(server.acked) == 1
    first, second = server.messages
    assert str(first.segment("MSH")(10)) == str(second.segment("MSH")(10)), "same control id"
    obr = second.segment("OBR")
    assert str(obr(3)) == "ACC0001" and str(obr(18)) == "ACC0001" and str(obr(25)) == "F"
    observations = {str(obx(3)(1)(1)): obx for obx in second.segments("OBX")}
    assert str(observations["SUBDURAL"](5)) == "0.8800" and str(observations["SUBDURAL"](8)) == "A"
    assert str(observations["ISCHEMIC"](8)) == "N"
    assert str(observations["PRIORITY"](5)) == "critical"
    assert str(observations["MODEL_SHA256"](5)) == "0123456789ab" + "c" * 52
    assert "not for clinical use" in str(observations["DISCLAIMER"](5))
    assert str(second.segment("PID")(3)) == "PID-77"
    assert box.study_state() == "delivered"


def test_hl7_silence_is_retried_then_dead_after_the_last_attempt(
    make_outbox: Callable[..., Outbox],
) -> None:
    server = MllpServer([None, None])
    server.start()
    try:
        box = make_outbox(delivery_ack_timeout=0.5, delivery_max_attempts=2)
        box.queue(("hl7", server.destination))
        run_until_settled(box)
    finally:
        server.stop()
    [row] = box.rows()
    assert row.state == DEAD and row.attempts == 2
    assert "gave up after 2 attempts" in (row.last_error or "")
    assert "no HL7 ACK in time" in (row.last_error or "")


def test_webhook_500_then_200_is_delivered_once_and_signed(
    make_outbox: Callable[..., Outbox],
) -> None:
    hook = HookServer([500, 200])
    hook.start()
    try:
        box = make_outbox(webhook_urls=hook.url, webhook_secret="k3y")
        box.queue(("webhook", hook.url))
        run_until_settled(box)
    finally:
        hook.stop()
    [row] = box.rows()
    assert row.state == SENT and row.attempts == 2
    assert [status for _, _, status in hook.requests] == [500, 200]
    (h1, b1, _), (h2, b2, _) = hook.requests
    assert h1["X-Triage-Delivery-Id"] == h2["X-Triage-Delivery-Id"] and b1 == b2
    expected = "sha256=" + hmac.new(b"k3y", b2, hashlib.sha256).hexdigest()
    assert h2["X-Triage-Signature"] == expected
    body = json.loads(b2)
    assert body["study_instance_uid"] == "1.2.826.0.1.3680043.8.498.4242"
    assert body["accession_number"] == "ACC0001" and body["priority"] == "critical"
    assert body["sr_sop_instance_uid"] == "1.2.826.0.1.3680043.8.498.77"
    assert body["model"]["sha256"].startswith("0123456789ab")
    assert {f["finding"]: f["probability"] for f in body["findings"]}["subdural"] == 0.88
    assert body["delivery_id"] == h2["X-Triage-Delivery-Id"]
    assert "not for clinical use" in body["disclaimer"]


def test_webhook_4xx_is_dead_with_the_reason(make_outbox: Callable[..., Outbox]) -> None:
    hook = HookServer([422])
    hook.start()
    try:
        box = make_outbox(webhook_urls=hook.url, webhook_secret="k3y")
        box.queue(("webhook", hook.url))
        box.runner().run_due()
    finally:
        hook.stop()
    [row] = box.rows()
    assert row.state == DEAD and "HTTP 422" in (row.last_error or "")
    assert len(hook.requests) == 1


def test_ups_workitem_created_once_with_high_priority(make_outbox: Callable[..., Outbox]) -> None:
    scp = PynetdicomScp(aet="WORKLIST")
    scp.start()
    try:
        box = make_outbox()
        box.queue(("ups", scp.destination))
        run_until_settled(box)
        # A crash between the SCP's answer and our commit sends it again: nothing new.
        with box.sessions() as session:
            from db.models import Delivery

            row = session.get(Delivery, box.rows()[0].id)
            assert row is not None
            row.state = DeliveryState.RETRYING
            session.commit()
        run_until_settled(box)
    finally:
        scp.stop()
    assert len(scp.workitems) == 1
    [workitem] = scp.workitems.values()
    assert workitem.ScheduledProcedureStepPriority == "HIGH"
    assert workitem.ProcedureStepState == "SCHEDULED"
    assert workitem.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.4242"
    assert workitem.ReferencedRequestSequence[0].AccessionNumber == "ACC0001"
    assert "PatientName" not in workitem or not str(workitem.PatientName)
    assert box.rows()[0].state == SENT


def test_study_is_delivered_only_when_every_destination_acknowledged(
    make_outbox: Callable[..., Outbox],
) -> None:
    hook = HookServer([200])
    hook.start()
    try:
        box = make_outbox(webhook_urls=hook.url, webhook_secret="k3y")
        box.queue(("webhook", hook.url), ("hl7", f"127.0.0.1:{free_port()}"))
        box.runner().run_due()
    finally:
        hook.stop()
    states = {row.channel: row.state for row in box.rows()}
    assert states == {"webhook": SENT, "hl7": RETRYING}
    assert box.study_state() == "predicted"


def test_a_new_version_is_sent_as_a_correction_with_its_new_priority(
    make_outbox: Callable[..., Outbox],
) -> None:
    server = MllpServer([])
    server.start()
    try:
        box = make_outbox()
        box.queue(("hl7", server.destination))
        run_until_settled(box)
        second = box.new_version(Priority.URGENT)
        box.queue(("hl7", server.destination), version_of=second)
        run_until_settled(box)
    finally:
        server.stop()
    first_message, correction = server.messages
    assert str(first_message.segment("OBR")(25)) == "F"
    assert str(correction.segment("OBR")(25)) == "C"
    assert {str(obx(11)) for obx in correction.segments("OBX")} == {"C"}
    assert str(correction.segment("OBR")(5)) == "A"  # urgent
    observations = {str(obx(3)(1)(1)): obx for obx in correction.segments("OBX")}
    assert str(observations["PRIORITY"](5)) == "urgent"
    assert str(observations["SUBDURAL"](8)) == "N"
    assert str(first_message.segment("MSH")(10)) != str(correction.segment("MSH")(10))
    assert box.study_state() == "delivered"
