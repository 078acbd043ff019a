"""The typed models round-trip on SQLite and PostgreSQL with the migrated schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from db.models import Delivery, Instance, Job, Prediction, Series, Study
from db.vocabulary import JobState, StudyState


def make_study(uid: str = "1.2.3", **fields: object) -> Study:
    return Study(study_instance_uid=uid, **fields)


def add_instance(session: Session, study: Study, series_uid: str, sop_uid: str) -> Instance:
    series = session.scalar(select(Series).where(Series.series_instance_uid == series_uid))
    if series is None:
        series = Series(study=study, series_instance_uid=series_uid, modality="CT")
        session.add(series)
    instance = Instance(
        series=series,
        sop_instance_uid=sop_uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        file_path=f"/spool/{sop_uid}.dcm",
        file_size=525_000,
    )
    session.add(instance)
    return instance


def test_study_series_instance_round_trip(session: Session) -> None:
    received = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    study = make_study(
        "1.2.826.0.1.3680043.8.498.1",
        calling_aet="CT_ROOM_1",
        modality="CT",
        study_description="CT HEAD",
        accession_number="ACC1",
        patient_id="PID1",
        study_date="20240506",
        first_received_at=received,
        last_received_at=received + timedelta(seconds=3),
    )
    session.add(study)
    series = Series(
        study=study,
        series_instance_uid="1.2.826.0.1.3680043.8.498.2",
        modality="CT",
        body_part="HEAD",
        series_description="HEAD 5mm",
        series_number=2,
        expected_instances=40,
    )
    session.add(series)
    session.add(
        Instance(
            series=series,
            sop_instance_uid="1.2.826.0.1.3680043.8.498.3",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.4.80",
            instance_number=7,
            position_z=-12.5,
            image_position="-125\\-125\\-12.5",
            image_orientation="1\\0\\0\\0\\1\\0",
            calling_aet="CT_ROOM_1",
            received_at=received,
            file_path="/spool/a/b/c.dcm",
            file_size=2**33,
        )
    )
    session.flush()
    session.expunge_all()

    loaded = session.scalars(select(Study)).one()
    assert loaded.state is StudyState.RECEIVING
    assert loaded.version == 0
    assert (loaded.calling_aet, loaded.patient_id, loaded.study_date) == (
        "CT_ROOM_1",
        "PID1",
        "20240506",
    )
    assert loaded.first_received_at == received
    assert loaded.first_received_at.tzinfo is not None
    assert loaded.last_received_at - loaded.first_received_at == timedelta(seconds=3)
    [loaded_series] = loaded.series
    assert (loaded_series.body_part, loaded_series.expected_instances) == ("HEAD", 40)
    [instance] = loaded_series.instances
    assert instance.position_z == -12.5
    assert instance.file_size == 2**33
    assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.4.80"
    assert instance.received_at == received


def test_times_are_stored_as_utc_whatever_the_offset(session: Session) -> None:
    local = datetime(2024, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    session.add(make_study(first_received_at=local, last_received_at=local))
    session.flush()
    session.expunge_all()
    loaded = session.scalars(select(Study)).one()
    assert loaded.first_received_at == local
    assert loaded.first_received_at.utcoffset() == timedelta(0)
    assert loaded.first_received_at.hour == 10


def test_naive_time_is_refused(session: Session) -> None:
    session.add(make_study(first_received_at=datetime(2024, 1, 1, 12, 0)))
    with pytest.raises(StatementError, match="naive datetime"):
        session.flush()


def test_unknown_study_state_is_refused(session: Session) -> None:
    session.add(make_study(state="archived"))
    with pytest.raises((StatementError, LookupError)):
        session.flush()


def test_every_study_state_round_trips(session: Session) -> None:
    for index, state in enumerate(StudyState):
        session.add(make_study(f"1.2.3.{index}", state=state))
    session.flush()
    session.expunge_all()
    states = {s.study_instance_uid: s.state for s in session.scalars(select(Study))}
    assert states == {f"1.2.3.{i}": state for i, state in enumerate(StudyState)}


def test_same_sop_instance_uid_cannot_be_recorded_twice(session: Session) -> None:
    study = make_study()
    session.add(study)
    add_instance(session, study, "1.2.3.4", "1.2.3.4.5")
    session.flush()
    add_instance(session, study, "1.2.3.4", "1.2.3.4.5")
    with pytest.raises(IntegrityError):
        session.flush()


def test_same_study_uid_cannot_be_recorded_twice(session: Session) -> None:
    session.add(make_study("9.9"))
    session.flush()
    session.add(make_study("9.9"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_job_key_is_unique_per_study_version_and_bundle(session: Session) -> None:
    study = make_study()
    session.add(study)
    session.flush()
    session.add(Job(study_id=study.id, study_version=1, bundle_sha256="a" * 64))
    session.add(Job(study_id=study.id, study_version=2, bundle_sha256="a" * 64))
    session.flush()
    job = session.scalars(select(Job).where(Job.study_version == 1)).one()
    assert job.state is JobState.QUEUED and job.attempts == 0 and job.shadow is False
    session.add(Job(study_id=study.id, study_version=1, bundle_sha256="a" * 64))
    with pytest.raises(IntegrityError):
        session.flush()


def test_prediction_json_fields_and_delivery_round_trip(session: Session) -> None:
    study = make_study()
    session.add(study)
    session.flush()
    prediction = Prediction(
        study_id=study.id,
        study_version=1,
        series_instance_uid="1.2.3.4",
        bundle_name="demo",
        bundle_version="0.1.0",
        bundle_sha256="b" * 64,
        synthetic_demo=True,
        probabilities={"any": 0.91, "ischemic": 0.02},
        flags={"any": True, "ischemic": False},
        thresholds={"any": 0.5},
        priority="urgent",
        slice_scores=[[0.1, 0.2], [0.9, 0.95]],
        timings={"decode_s": 0.4},
    )
    session.add(prediction)
    session.flush()
    session.add(
        Delivery(prediction_id=prediction.id, channel="sr", destination="PACS@10.0.0.1:104")
    )
    session.flush()
    session.expunge_all()

    loaded = session.scalars(select(Prediction)).one()
    assert loaded.probabilities == {"any": 0.91, "ischemic": 0.02}
    assert loaded.flags == {"any": True, "ischemic": False}
    assert loaded.slice_scores == [[0.1, 0.2], [0.9, 0.95]]
    assert loaded.synthetic_demo is True and loaded.shadow is False
    delivery = session.scalars(select(Delivery)).one()
    assert (delivery.state, delivery.attempts, delivery.prediction_id) == ("pending", 0, loaded.id)


def test_deleting_a_study_deletes_its_series_and_instances(session: Session) -> None:
    study = make_study()
    session.add(study)
    add_instance(session, study, "1.2.3.4", "1.2.3.4.1")
    add_instance(session, study, "1.2.3.4", "1.2.3.4.2")
    session.flush()
    session.delete(study)
    session.flush()
    assert session.scalars(select(Series)).all() == []
    assert session.scalars(select(Instance)).all() == []
