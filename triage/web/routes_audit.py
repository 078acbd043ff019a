"""``/api/audit``: the access and event log, for auditors and admins only.

Reading the audit log is itself audited (one row per read). ``/api/audit/export`` gives
the same rows as JSON lines, the form log collectors and SIEMs ingest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from db.audit_queries import audit_log
from db.users import Principal
from db.vocabulary import AuditEventType
from triage.web.access_log import record_access
from triage.web.auth import Auditor, DbSession
from triage.web.routes_studies import AUTH_RESPONSES
from triage.web.schemas import AuditEventOut, AuditPage
from triage.web.study_views import as_utc

router = APIRouter(prefix="/api/audit", tags=["audit"])
_PRINTABLE = r"^[\x20-\x7e]+$"


@dataclass(frozen=True)
class AuditQuery:
    """The audit log's filters from the query string (times without a zone are UTC)."""

    since: datetime | None = None
    until: datetime | None = None
    event_type: list[AuditEventType] | None = None
    after_id: int = 0


def audit_query(
    since: datetime | None = None,
    until: datetime | None = None,
    event_type: Annotated[list[AuditEventType] | None, Query()] = None,
    after_id: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> AuditQuery:
    """Dependency: the filters both audit endpoints take."""
    return AuditQuery(as_utc(since), as_utc(until), event_type, after_id)


def _read(
    request: Request,
    principal: Principal,
    session: Session,
    query: AuditQuery,
    *,
    limit: int,
    action: str,
    actor: str | None = None,
    study_instance_uid: str | None = None,
) -> list[dict[str, Any]]:
    """The rows, and the one access row that says they were read."""
    rows = audit_log(
        session,
        since=query.since,
        until=query.until,
        event_types=list(query.event_type or []),
        actor=actor,
        study_instance_uid=study_instance_uid,
        after_id=query.after_id,
        limit=limit,
    )
    record_access(
        session,
        request,
        principal,
        AuditEventType.AUDIT_LOG_VIEWED,
        action=action,
        detail={"rows": len(rows), "after_id": query.after_id},
    )
    session.commit()
    return rows


@router.get("", responses=AUTH_RESPONSES)
def get_audit(
    request: Request,
    principal: Auditor,
    session: DbSession,
    query: Annotated[AuditQuery, Depends(audit_query)],
    actor: Annotated[str | None, Query(max_length=128, pattern=_PRINTABLE)] = None,
    study_instance_uid: Annotated[str | None, Query(pattern=r"^[0-9.]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Audit rows oldest first (who, role, address, study, action in each row's detail)."""
    rows = _read(
        request, principal, session, query, limit=limit, action="read audit log",
        actor=actor, study_instance_uid=study_instance_uid,
    )  # fmt: skip
    items = [AuditEventOut.model_validate(row) for row in rows]
    return AuditPage(items=items, next_after_id=items[-1].id if len(items) == limit else None)


@router.get(
    "/export",
    responses={
        **AUTH_RESPONSES,
        200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines"},
    },
    response_class=Response,
)
def export_audit(
    request: Request,
    principal: Auditor,
    session: DbSession,
    query: Annotated[AuditQuery, Depends(audit_query)],
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> Response:
    """The audit rows as JSON lines (one object per line), oldest first."""
    rows = _read(request, principal, session, query, limit=limit, action="export audit log")
    body = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows)
    return Response(body, media_type="application/x-ndjson")
