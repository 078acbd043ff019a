"""The listener's instance writer on a real database: the fast path only ever appends to a
study still receiving; everything else falls to the full path, which reopens by the table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from db.instance_writer import InstanceWriter
from db.models import Instance, Study, utcnow
from db.vocabulary import StudyState

STUDY = {"study_instance_uid": "1.2.9", "calling_aet": "CT1", "modality": "CT"}
SERIES = {"series_instance_uid": "1.2.9.1", "modality": "CT", "expected_instances": 3}


def instance(n: int) -> dict[str, object]:
    return {
        "sop_instance_uid": f"1.2.9.1.{n}",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "instance_number": n,
        "position_z": 5.0 * n,
        "file_path": f"/spool/{n}.dcm",
        "file_size": 10,
    }


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _study(sessions: sessionmaker[Session]) -> tuple[StudyState, int, str | None]:
    with sessions() as session:
        study = session.scalars(select(Study)).one()
        return study.state, len(session.scalars(select(Instance)).all()), study.state_reason


def test_fast_path_appends_to_a_receiving_study_and_is_known(
    sessions: sessionmaker[Session],
) -> None:
    writer = InstanceWriter(sessions)
    first = writer.record(STUDY, SERIES, instance(1), utcnow())
    assert first.new and not first.reopened and first.series_id is not None

    assert writer.append_to_receiving(first.study_id, first.series_id, instance(2), utcnow())
    assert not writer.append_to_receiving(first.study_id, first.series_id, instance(2), utcnow())

    assert writer.is_known("1.2.9.1.2") and not writer.is_known("1.2.9.1.3")
    assert _study(sessions)[:2] == (StudyState.RECEIVING, 2)


def test_completed_study_refuses_the_fast_path_and_is_reopened_by_the_full_path(
    sessions: sessionmaker[Session],
) -> None:
    writer = InstanceWriter(sessions)
    first = writer.record(STUDY, SERIES, instance(1), utcnow())
    assert first.series_id is not None
    with sessions() as session:
        session.scalars(select(Study)).one().state = StudyState.PREDICTED  # arranged, not a move
        session.commit()

    assert not writer.append_to_receiving(first.study_id, first.series_id, instance(2), utcnow())
    assert _study(sessions)[:2] == (StudyState.PREDICTED, 1)

    late = writer.record(STUDY, SERIES, instance(2), utcnow())
    assert late.new and late.reopened and late.study_id == first.study_id
    assert _study(sessions) == (StudyState.RECEIVING, 2, "new instances after completion")


def test_duplicate_through_the_full_path_writes_nothing(sessions: sessionmaker[Session]) -> None:
    writer = InstanceWriter(sessions)
    writer.record(STUDY, SERIES, instance(1), utcnow())

    again = writer.record(STUDY, SERIES, instance(1), utcnow())

    assert not again.new and again.series_id is None
    assert _study(sessions)[:2] == (StudyState.RECEIVING, 1)
