"""Query functions: what the listener, reconciler and ``triage audit`` ask of the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from db import queries
from db.audit import record_event
from db.models import Instance, Series, Study
from db.vocabulary import AuditEventType, CompletionBasis, StudyState

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def add_study(
    session: Session, uid: str, *, series: dict[str, int], minutes: int = 0, **fields: object
) -> Study:
    first = T0 + timedelta(minutes=minutes)
    study = Study(
        study_instance_uid=uid,
        first_received_at=first,
        last_received_at=first + timedelta(seconds=30),
        **fields,
    )
    session.add(study)
    for series_uid, count in series.items():
        row = Series(study=study, series_instance_uid=series_uid, modality="CT")
        session.add(row)
        for n in range(1, count + 1):
            session.add(
                Instance(
                    series=row,
                    sop_instance_uid=f"{series_uid}.{n}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    instance_number=n,
                    position_z=5.0 * n,
                    file_path=f"/spool/{n}.dcm",
                    file_size=10,
                )
            )
    session.flush()
    return study


def test_finders_answer_by_uid(session: Session) -> None:
    study = add_study(session, "1.1", series={"1.1.1": 2})
    assert queries.find_study(session, "1.1") is study
    assert queries.find_study(session, "1.2") is None
    assert queries.find_series(session, "1.1.1").study_id == study.id
    assert queries.find_series(session, "1.1.2") is None
    assert queries.instance_exists(session, "1.1.1.2")
    assert not queries.instance_exists(session, "1.1.1.3")


def test_studies_in_states_oldest_first(session: Session) -> None:
    add_study(session, "2.1", series={}, minutes=5, state=StudyState.RECEIVING)
    add_study(session, "2.2", series={}, minutes=1, state=StudyState.RECEIVING)
    add_study(session, "2.3", series={}, minutes=0, state=StudyState.QUEUED)
    add_study(session, "2.4", series={}, minutes=3, state=StudyState.COMPLETE)

    found = queries.studies_in_states(session, [StudyState.RECEIVING, StudyState.COMPLETE])

    assert [s.study_instance_uid for s in found] == ["2.2", "2.4", "2.1"]


def test_series_instances_lists_every_pair_of_one_study(session: Session) -> None:
    study = add_study(session, "3.1", series={"3.1.1": 2, "3.1.2": 3})
    add_study(session, "3.2", series={"3.2.1": 4})

    pairs = queries.series_instances(session, study.id)

    assert sorted((s.series_instance_uid, i.instance_number) for s, i in pairs) == [
        ("3.1.1", 1), ("3.1.1", 2), ("3.1.2", 1), ("3.1.2", 2), ("3.1.2", 3),
    ]  # fmt: skip


def test_study_summaries_count_series_and_instances(session: Session) -> None:
    add_study(session, "5.1", series={"5.1.1": 3, "5.1.2": 2}, calling_aet="CT1", minutes=1)
    add_study(session, "5.2", series={}, minutes=0)

    rows = queries.study_summaries(session)

    assert [r["study_instance_uid"] for r in rows] == ["5.2", "5.1"]
    empty, full = rows
    assert (empty["series_count"], empty["instance_count"]) == (0, 0)
    assert (full["series_count"], full["instance_count"]) == (2, 5)
    assert full["calling_aet"] == "CT1"
    assert full["state"] == "receiving"
    assert full["completed_at"] is None
    assert datetime.fromisoformat(full["first_received_at"]) == T0 + timedelta(minutes=1)
    assert datetime.fromisoformat(full["last_received_at"]) == T0 + timedelta(minutes=1, seconds=30)
    expected_keys = {
        "study_instance_uid", "state", "calling_aet", "series_count", "instance_count",
        "first_received_at", "last_received_at", "completed_at",
    }  # fmt: skip
    assert expected_keys <= set(full)


def test_study_summaries_name_the_rule_of_the_latest_completion(session: Session) -> None:
    add_study(session, "7.1", series={}, minutes=0)
    add_study(session, "7.2", series={}, minutes=1)
    first = {"version": 1, "basis": CompletionBasis.GEOMETRY}
    again = {"version": 2, "basis": CompletionBasis.IDLE_TIMER}
    record_event(
        session, AuditEventType.STUDY_COMPLETED, actor="l", study_instance_uid="7.1", detail=first
    )
    record_event(
        session,
        AuditEventType.STUDY_QUEUED,
        actor="l",
        study_instance_uid="7.1",
        detail={"version": 1},
    )
    record_event(
        session, AuditEventType.STUDY_UPDATED, actor="l", study_instance_uid="7.1", detail=again
    )
    session.flush()

    rows = {r["study_instance_uid"]: r for r in queries.study_summaries(session)}

    assert rows["7.1"]["completion_basis"] == "idle_timer"
    assert rows["7.2"]["completion_basis"] is None  # still receiving


def test_mark_queued_only_from_complete_at_the_same_version(session: Session) -> None:
    study = add_study(session, "6.1", series={}, state=StudyState.COMPLETE, version=2)

    assert not queries.mark_queued_if_complete(session, study.id, 1), "stale version"
    assert queries.mark_queued_if_complete(session, study.id, 2)
    assert not queries.mark_queued_if_complete(session, study.id, 2), "already queued"
    session.expire_all()
    assert queries.find_study(session, "6.1").state is StudyState.QUEUED

    moved_on = add_study(session, "6.2", series={}, state=StudyState.PREDICTED, version=1)
    assert not queries.mark_queued_if_complete(session, moved_on.id, 1)
