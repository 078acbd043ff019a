"""Plain query functions over a :class:`~sqlalchemy.orm.Session`; callers own the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import AuditEvent, Instance, Series, Study, utcnow
from db.study_states import require_move
from db.vocabulary import AuditEventType, StudyState

_COMPLETIONS = (AuditEventType.STUDY_COMPLETED, AuditEventType.STUDY_UPDATED)


def find_study(session: Session, study_uid: str) -> Study | None:
    """The study with this Study Instance UID, if recorded."""
    return session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one_or_none()


def find_series(session: Session, series_uid: str) -> Series | None:
    """The series with this Series Instance UID, if recorded."""
    return session.scalars(
        select(Series).where(Series.series_instance_uid == series_uid)
    ).one_or_none()


def instance_exists(session: Session, sop_instance_uid: str) -> bool:
    """Whether an instance with this SOP Instance UID is already recorded."""
    found = session.scalar(
        select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid).limit(1)
    )
    return found is not None


def recorded_sop_uids(session: Session, series_uid: str) -> set[str]:
    """SOP Instance UIDs recorded for the series with this UID (empty if none)."""
    return set(
        session.scalars(
            select(Instance.sop_instance_uid)
            .join(Series, Series.id == Instance.series_id)
            .where(Series.series_instance_uid == series_uid)
        )
    )


def studies_in_states(session: Session, states: Iterable[StudyState]) -> Sequence[Study]:
    """Studies currently in any of ``states``, oldest first."""
    return session.scalars(
        select(Study).where(Study.state.in_(list(states))).order_by(Study.first_received_at)
    ).all()


def series_instances(session: Session, study_id: int) -> Sequence[tuple[Series, Instance]]:
    """Every (series, instance) pair of a study, for rebuilding progress after a restart."""
    rows = session.execute(
        select(Series, Instance)
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study_id)
    ).all()
    return [(row[0], row[1]) for row in rows]


def study_summaries(session: Session) -> list[dict[str, Any]]:
    """One dict per study for ``triage audit studies``: state, counts and times."""
    series_count = (
        select(Series.study_id, func.count(Series.id).label("n"))
        .group_by(Series.study_id)
        .subquery()
    )
    instance_count = (
        select(Series.study_id, func.count(Instance.id).label("n"))
        .join(Instance, Instance.series_id == Series.id)
        .group_by(Series.study_id)
        .subquery()
    )
    rows = session.execute(
        select(Study, series_count.c.n, instance_count.c.n)
        .outerjoin(series_count, series_count.c.study_id == Study.id)
        .outerjoin(instance_count, instance_count.c.study_id == Study.id)
        .order_by(Study.first_received_at)
    ).all()

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    bases = completion_bases(session)

    return [
        {
            "study_instance_uid": study.study_instance_uid,
            "state": study.state.value,
            "state_reason": study.state_reason,
            "version": study.version,
            "calling_aet": study.calling_aet,
            "modality": study.modality,
            "series_count": n_series or 0,
            "instance_count": n_instances or 0,
            "first_received_at": iso(study.first_received_at),
            "last_received_at": iso(study.last_received_at),
            "completed_at": iso(study.completed_at),
            "completion_basis": bases.get(study.study_instance_uid),
        }
        for study, n_series, n_instances in rows
    ]


def completion_bases(session: Session) -> dict[str, str | None]:
    """Study UID -> the rule (``CompletionBasis`` value) that completed its latest version.

    Read from the completion audit events the assembler writes, so no column is needed;
    a study completed before the basis was audited maps to None.
    """
    rows = session.execute(
        select(AuditEvent.study_instance_uid, AuditEvent.detail)
        .where(AuditEvent.event_type.in_(_COMPLETIONS))
        .order_by(AuditEvent.id)
    ).all()
    return {uid: (detail or {}).get("basis") for uid, detail in rows if uid is not None}


def mark_queued_if_complete(session: Session, study_id: int, version: int) -> bool:
    """Move a study from ``complete`` to ``queued`` unless a worker already moved it on.

    A conditional update, not :func:`db.study_states.transition`, so a worker's faster move
    is never overwritten; the move itself is still checked against the state table.
    """
    require_move(f"id {study_id}", StudyState.COMPLETE, StudyState.QUEUED)
    result = session.execute(
        update(Study)
        .where(Study.id == study_id, Study.version == version, Study.state == StudyState.COMPLETE)
        .values(state=StudyState.QUEUED, state_reason=None, updated_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))
