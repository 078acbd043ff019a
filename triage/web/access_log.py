"""The access log: one audit row per read of patient data and per acknowledgement.

In the spirit of IHE ATNA (DICOM PS3.15 A.5): who (user and role), when (the row's time),
from where (the peer address), which study, what action (the event type and ``action``).
Every web handler that returns patient data calls :func:`record_access` exactly once, in
the same transaction as its read, so a read that fails leaves no row and a row never
lacks its read.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from db.audit import record_event
from db.users import Principal
from db.vocabulary import AuditEventType
from triage.web.context import client_address


def record_access(
    session: Session,
    request: Request,
    principal: Principal,
    event_type: AuditEventType,
    *,
    action: str,
    study_instance_uid: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add the access row (the caller commits with its read)."""
    record_event(
        session,
        event_type,
        actor=principal.actor,
        study_instance_uid=study_instance_uid,
        detail={
            "role": principal.role.value,
            "address": client_address(request),
            "action": action,
            **(detail or {}),
        },
    )
