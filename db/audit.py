"""The one way to write the audit log.

Auditors ask "what did the model say about which study, with which weights, and who
looked"; every such fact is an :class:`~db.vocabulary.AuditEventType` written here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import AuditEvent
from db.vocabulary import AuditEventType


def record_event(
    session: Session,
    event_type: AuditEventType,
    *,
    actor: str,
    study_instance_uid: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event to ``session`` (committed with the caller's unit of work).

    ``detail`` must never hold patient names; callers pass UIDs, AE titles and reasons.
    """
    if not isinstance(event_type, AuditEventType):
        raise TypeError(f"event_type must be an AuditEventType, got {event_type!r}")
    event = AuditEvent(
        event_type=event_type,
        actor=actor,
        study_instance_uid=study_instance_uid,
        detail=detail or {},
    )
    session.add(event)
    return event
