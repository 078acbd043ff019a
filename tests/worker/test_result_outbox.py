"""The inference worker's side of delivery: documents spooled, rows queued with the prediction.

A real study arrives through the listener (DCMTK storescu), the task runs in-process with
destinations configured, and the outbox runner then sends to real peers: DCMTK storescp
for the SR, key images and KOS, and an MLLP server for HL7.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    Comprehensive3DSRStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
)
from sqlalchemy import select

from db.models import Delivery, Prediction, Study
from db.vocabulary import DeliveryState, StudyState, TaskOutcome
from tests.delivery.peers import DcmtkStoreScp, MllpServer
from tests.worker.test_study_task import _receive
from worker.delivery.runner import DeliveryRunner
from worker.runtime import WorkerRuntime
from worker.tasks import run_study


@pytest.fixture
def destinations(tmp_path: Path):
    pacs = DcmtkStoreScp(tmp_path / "pacs")
    ris = MllpServer([])
    pacs.start()
    ris.start()
    try:
        yield pacs, ris
    finally:
        pacs.stop()
        ris.stop()


def _received_study(make_settings, database_url, tiny_bundle, study, poll, send_study, **extra):
    settings = make_settings(database_url=database_url, model_bundle=tiny_bundle, **extra)
    return settings, _receive(settings, study.files, poll, send_study)


def test_result_is_queued_with_its_prediction_and_reaches_the_pacs(
    make_settings, database_url, tiny_bundle, lesion_studies, poll, send_study, destinations
) -> None:
    pacs, ris = destinations
    settings, study_id = _received_study(
        make_settings,
        database_url,
        tiny_bundle,
        lesion_studies("subdural"),
        poll,
        send_study,
        dicom_destinations=pacs.destination,
        hl7_destinations=ris.destination,
        key_image_count=2,
    )
    runtime = WorkerRuntime.from_settings(settings)
    run = run_study(study_id, 1, runtime=runtime)
    assert run.outcome in (TaskOutcome.PREDICTED, TaskOutcome.NOT_ASSESSED)
    with runtime.sessions() as session:
        [prediction] = session.scalars(select(Prediction)).all()
        rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        study_uid = session.get(Study, study_id).study_instance_uid
    assert sorted(run.delivery_ids) == [row.id for row in rows]
    assert [(r.channel, r.state) for r in rows] == [
        ("dicom", DeliveryState.PENDING),
        ("hl7", DeliveryState.PENDING),
    ]
    assert {r.prediction_id for r in rows} == {prediction.id}
    folder = Path(rows[0].result_dir)
    assert folder.is_dir() and folder.is_relative_to(settings.spool.dir / "results" / study_uid)
    assert "documents" in prediction.timings
    sr_uid = rows[0].document_uids["sr"]

    # a redelivered task queues nothing more
    assert run_study(study_id, 1, runtime=runtime).outcome is TaskOutcome.ALREADY_PREDICTED

    DeliveryRunner(runtime.sessions, settings).run_due()
    with runtime.sessions() as session:
        states = [r.state for r in session.scalars(select(Delivery))]
        study = session.get(Study, study_id)
        assert study.state == StudyState.DELIVERED
    assert states == [DeliveryState.SENT, DeliveryState.SENT]
    stored = pacs.received()
    classes = sorted(str(ds.SOPClassUID) for ds in stored)
    assert classes.count(str(Comprehensive3DSRStorage)) == 1
    if prediction.assessed:
        assert classes.count(str(SecondaryCaptureImageStorage)) == 2
        assert classes.count(str(KeyObjectSelectionDocumentStorage)) == 1
    assert {str(ds.StudyInstanceUID) for ds in stored} == {study_uid}
    assert sr_uid in {str(ds.SOPInstanceUID) for ds in stored}
    [message] = ris.messages
    observations = {str(obx(3)(1)(1)): str(obx(5)) for obx in message.segments("OBX")}
    assert observations["SR_UID"] == sr_uid


def test_undecodable_study_still_delivers_a_not_assessed_result(
    make_settings,
    database_url,
    tiny_bundle,
    lesion_studies,
    poll,
    send_study,
    destinations: tuple[DcmtkStoreScp, MllpServer],
) -> None:
    pacs, ris = destinations
    settings, study_id = _received_study(
        make_settings,
        database_url,
        tiny_bundle,
        lesion_studies("none", seed=11),
        poll,
        send_study,
        dicom_destinations=pacs.destination,
        hl7_destinations=ris.destination,
    )
    for path in settings.spool.dir.rglob("*.dcm"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])  # pixel data cut short
    runtime = WorkerRuntime.from_settings(settings)
    run = run_study(study_id, 1, runtime=runtime)
    assert run.outcome is TaskOutcome.FAILED and len(run.delivery_ids) == 2
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        assert study.state == StudyState.FAILED and "cannot decode" in study.state_reason
        [prediction] = session.scalars(select(Prediction)).all()
    assert prediction.assessed is False and prediction.priority == "not_assessed"
    assert "cannot decode" in prediction.reasons[0]
    DeliveryRunner(runtime.sessions, settings).run_due()
    [sr] = pacs.received()
    assert str(sr.SOPClassUID) == str(Comprehensive3DSRStorage)
    [message] = ris.messages
    observations = {str(obx(3)(1)(1)): str(obx(5)) for obx in message.segments("OBX")}
    assert observations["PRIORITY"] == "not_assessed"
    assert "cannot decode" in observations["NOT_ASSESSED"]


def test_without_destinations_nothing_is_built_or_queued(
    make_settings, database_url, tiny_bundle, lesion_studies, poll, send_study
) -> None:
    settings, study_id = _received_study(
        make_settings, database_url, tiny_bundle, lesion_studies("subdural"), poll, send_study
    )
    runtime = WorkerRuntime.from_settings(settings)
    run = run_study(study_id, 1, runtime=runtime)
    assert run.delivery_ids == ()
    with runtime.sessions() as session:
        assert session.scalars(select(Delivery)).all() == []
    assert not (settings.spool.dir / "results").exists()


def test_a_new_version_names_the_earlier_sr_as_its_predecessor(
    make_settings, database_url, tiny_bundle, lesion_studies, poll, send_study, destinations
) -> None:
    pacs, _ = destinations
    settings, study_id = _received_study(
        make_settings,
        database_url,
        tiny_bundle,
        lesion_studies("subdural"),
        poll,
        send_study,
        dicom_destinations=pacs.destination,
        key_images=False,
    )
    runtime = WorkerRuntime.from_settings(settings)
    run_study(study_id, 1, runtime=runtime)
    with runtime.sessions() as session:  # late images completed the study again
        study = session.get(Study, study_id)
        study.version, study.state = 2, StudyState.QUEUED
        session.commit()
    assert run_study(study_id, 2, runtime=runtime).delivery_ids
    with runtime.sessions() as session:
        first, second = session.scalars(select(Delivery).order_by(Delivery.id)).all()
    assert first.document_uids["sr"] != second.document_uids["sr"]
    [sr] = [p for p in Path(second.result_dir).iterdir() if p.suffix == ".dcm"]
    document = dcmread(sr)
    [predecessor] = document.PredecessorDocumentsSequence
    referenced = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == first.document_uids["sr"]
