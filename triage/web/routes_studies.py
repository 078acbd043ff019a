"""``/api/studies``, one study, its acknowledgement, and the model bundles seen.

Every handler that returns patient data writes exactly one access row in the transaction
of its read (:mod:`triage.web.access_log`). Studies are addressed by their database id, so
no identifier of a patient or study appears in a URL or an access log line.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from db.users import Principal
from db.vocabulary import AuditEventType, Priority, StudyState
from db.worklist import (
    StudyFilter,
    acknowledge,
    bundles_seen,
    list_studies,
    study_detail,
    study_uid,
)
from triage.web.access_log import record_access
from triage.web.auth import Acknowledger, DbSession, Reader, check_csrf
from triage.web.context import web_context
from triage.web.schemas import Acknowledged, BundleSeen, Me, StudyDetail, StudyPage, label_of
from triage.web.study_views import as_utc, detail, list_item

router = APIRouter(prefix="/api", tags=["studies"])

AUTH_RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "No valid token or session"},
    403: {"description": "The role may not do this"},
}
NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "No such study"}}
StudyId = Annotated[int, Path(ge=1, le=2**31 - 1)]
_PRINTABLE = r"^[\x20-\x7e]+$"


def study_filter(
    received_from: datetime | None = None,
    received_to: datetime | None = None,
    state: Annotated[list[StudyState] | None, Query()] = None,
    finding: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,32}$")] = None,
    min_probability: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    bundle_version: Annotated[str | None, Query(max_length=64, pattern=_PRINTABLE)] = None,
    calling_aet: Annotated[
        str | None, Query(max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]+$")
    ] = None,
    delivered: bool | None = None,
    assessed: bool | None = None,
) -> StudyFilter:
    """The list filters from the query string (times without a zone are UTC).

    ``finding`` alone keeps studies flagged for it; with ``min_probability`` it keeps
    studies whose probability for it is at least that.
    """
    if min_probability is not None and finding is None:
        # The same shape as FastAPI's own 422s, so the answer matches the OpenAPI schema.
        raise RequestValidationError(
            [{"type": "missing", "loc": ("query", "finding"), "input": None,
              "msg": "min_probability needs finding"}]
        )  # fmt: skip
    return StudyFilter(
        received_from=as_utc(received_from),
        received_to=as_utc(received_to),
        states=list(state or []),
        finding=finding,
        min_probability=min_probability,
        priorities=list(priority or []),
        bundle_version=bundle_version,
        calling_aet=calling_aet,
        delivered=delivered,
        assessed=assessed,
    )


@router.get("/me", responses=AUTH_RESPONSES)
def me(principal: Reader) -> Me:
    """Who these credentials belong to (no patient data)."""
    return Me(name=principal.name, role=principal.role)


@router.get("/studies", responses=AUTH_RESPONSES)
def get_studies(
    request: Request,
    principal: Reader,  # first: credentials are checked before any parameter
    flt: Annotated[StudyFilter, Depends(study_filter)],
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> StudyPage:
    """Studies matching the filters, by priority (critical first) then arrival (oldest first).

    Studies without a result come after every result; "not assessed" is its own priority.
    """
    rows, total = list_studies(session, flt, limit=limit, offset=offset)
    record_access(
        session,
        request,
        principal,
        AuditEventType.WORKLIST_VIEWED,
        action="list studies",
        detail={"studies": [row["study_instance_uid"] for row in rows], "total": total},
    )
    session.commit()
    return StudyPage(total=total, limit=limit, offset=offset, items=[list_item(r) for r in rows])


@router.get("/studies/{study_id}", responses={**AUTH_RESPONSES, **NOT_FOUND})
def get_study(
    request: Request,
    principal: Reader,
    study_id: StudyId,
    session: DbSession,
) -> StudyDetail:
    """One study: per-class probabilities, the per-slice curve, the series read, deliveries
    and attempts, timings, and shadow results beside the deployed one."""
    found = study_detail(session, study_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such study")
    record_access(
        session,
        request,
        principal,
        AuditEventType.STUDY_VIEWED,
        action="read study",
        study_instance_uid=found["study_instance_uid"],
    )
    session.commit()
    return detail(found)


@router.post(
    "/studies/{study_id}/acknowledge",
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
async def post_acknowledge(
    request: Request,
    principal: Acknowledger,
    study_id: StudyId,
) -> Acknowledged:
    """Say the current version of this study's result was seen (audited; sessions need the
    CSRF token in ``X-CSRF-Token``)."""
    await check_csrf(request, principal)
    return await run_in_threadpool(acknowledge_study, request, study_id, principal)


def acknowledge_study(request: Request, study_id: int, principal: Principal) -> Acknowledged:
    """Record one acknowledgement and its one audit row (shared by the API and the page)."""
    with web_context(request).sessions() as session:
        found = study_uid(session, study_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such study")
        uid, version = found
        new = acknowledge(session, study_id, version, principal.user_id)
        record_access(
            session,
            request,
            principal,
            AuditEventType.STUDY_ACKNOWLEDGED,
            action="acknowledge",
            study_instance_uid=uid,
            detail={"study_version": version, "new": new},
        )
        session.commit()
    return Acknowledged(
        study_id=study_id, study_version=version, acknowledged_by=principal.name, new=new
    )


@router.get("/bundles", responses=AUTH_RESPONSES)
def get_bundles(
    principal: Reader,
    session: DbSession,
) -> list[BundleSeen]:
    """Every model bundle that made a stored result (no patient data)."""
    return [
        BundleSeen(
            **row,
            label=label_of(row),
        )
        for row in bundles_seen(session)
    ]
