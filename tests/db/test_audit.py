"""The audit log: a closed vocabulary written through one function."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.audit import record_event
from db.models import AuditEvent
from db.vocabulary import AuditEventType


def test_event_is_written_with_actor_study_and_detail(session: Session) -> None:
    record_event(
        session,
        AuditEventType.STUDY_COMPLETED,
        actor="listener",
        study_instance_uid="1.2.3",
        detail={"version": 1, "reason": "all 1 series whole"},
    )
    session.flush()
    session.expunge_all()
    event = session.scalars(select(AuditEvent)).one()
    assert event.event_type is AuditEventType.STUDY_COMPLETED
    assert (event.actor, event.study_instance_uid) == ("listener", "1.2.3")
    assert event.detail == {"version": 1, "reason": "all 1 series whole"}
    assert event.at.tzinfo is not None


def test_every_event_type_can_be_stored(session: Session) -> None:
    for event_type in AuditEventType:
        record_event(session, event_type, actor="test")
    session.flush()
    session.expunge_all()
    stored = [e.event_type for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert stored == list(AuditEventType)
    assert all(e.detail == {} for e in session.scalars(select(AuditEvent)))


@pytest.mark.parametrize("event_type", ["study_completed", "made_up", None])
def test_event_outside_the_vocabulary_is_refused(session: Session, event_type: object) -> None:
    with pytest.raises(TypeError, match="event_type must be an AuditEventType"):
        record_event(session, event_type, actor="test")  # type: ignore[arg-type]
    assert len(session.new) == 0
