"""The whole loop with a real PACS: Orthanc sends a study to us, our results land back in it.

Orthanc (the Debian binary, its own config) holds the phantom study and C-STOREs it to our
listener through its REST API, as a PACS forwarding rule would. The listener runs here, the
inference worker and the delivery worker are real ``triage`` processes, and the check is
Orthanc's own REST answer: our SR, key images and KOS are in the same study. A second DICOM
destination (DCMTK storescp) is down when the result is made and comes up afterwards: it
gets the result once, on a retry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import (
    Comprehensive3DSRStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
)
from sqlalchemy import select

from bench.orthanc_peer import start_orthanc
from db.engine import make_engine, make_session_factory
from db.models import Delivery, Study
from db.vocabulary import DeliveryState
from listener.service import start_listener
from tests.delivery.peers import DcmtkStoreScp
from tests.worker.conftest import worker_process

pytestmark = pytest.mark.slow


def test_orthanc_study_comes_back_with_sr_key_images_and_kos(
    make_settings, tiny_bundle, lesion_studies, poll, tmp_path: Path
) -> None:
    study = lesion_studies("subdural")
    late = DcmtkStoreScp(tmp_path / "late-pacs")
    listener_settings = make_settings(model_bundle=tiny_bundle)
    service = start_listener(listener_settings, port=0)
    orthanc = start_orthanc(tmp_path / "orthanc", triage_port=service.port)
    settings = make_settings(
        model_bundle=tiny_bundle,
        dicom_destinations=f"{orthanc.destination},{late.destination}",
        delivery_backoff_seconds=1.0,
        delivery_backoff_max_seconds=2.0,
        delivery_ack_timeout=5.0,
        delivery_poll_seconds=0.5,
        key_image_count=2,
    )
    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))

    def rows() -> list[Delivery]:
        with sessions() as session:
            return list(session.scalars(select(Delivery).order_by(Delivery.id)))

    try:
        with (
            worker_process(settings, log=tmp_path / "worker.log"),
            worker_process(settings, log=tmp_path / "delivery.log", command=("delivery-worker",)),
        ):
            orthanc.send_to_triage(orthanc.upload(study.files))
            poll(
                lambda: any(r.state == DeliveryState.SENT for r in rows()),
                timeout=120,
                what="the result stored in Orthanc",
            )
            poll(
                lambda: (
                    [r.state for r in rows() if r.destination == late.destination]
                    == [DeliveryState.RETRYING]
                ),
                timeout=30,
                what="the down PACS's delivery to wait for a retry",
            )
            late.start()
            poll(
                lambda: all(r.state == DeliveryState.SENT for r in rows()),
                timeout=60,
                what="the late PACS to get the result",
            )
    finally:
        late.stop()
        service.stop()
        orthanc_classes = orthanc.sop_classes(orthanc.study_id(study.study_uid) or "")
        orthanc.stop()

    [row_orthanc, row_late] = rows()
    uids = row_orthanc.document_uids
    assert orthanc_classes[str(Comprehensive3DSRStorage)] == [uids["sr"]]
    assert sorted(orthanc_classes[str(SecondaryCaptureImageStorage)]) == sorted(uids["key_images"])
    assert len(uids["key_images"]) == 2
    assert orthanc_classes[str(KeyObjectSelectionDocumentStorage)] == [uids["kos"]]
    assert len(orthanc_classes["1.2.840.10008.5.1.4.1.1.2"]) == len(study.files)  # the CT
    assert row_orthanc.attempts == 1 and row_late.attempts >= 2
    received = late.received()
    assert sorted(str(ds.SOPInstanceUID) for ds in received) == sorted(
        [uids["sr"], uids["kos"], *uids["key_images"]]
    ), "the late PACS has exactly one copy of each"
    with sessions() as session:
        [stored] = session.scalars(select(Study)).all()
        assert stored.state.value == "delivered"
