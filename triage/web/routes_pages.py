"""The browser side: sign-in, the worklist page and its live updates, one study, sign-out.

Pages use cookie sessions; every form that changes anything carries the session's CSRF
token (sign-in, before a session exists, a double-submit cookie). The live stream sends
no patient data, only "something changed": the page then fetches its rows, which is an
access-logged read like any other.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from db.audit import record_event
from db.models import utcnow
from db.users import (
    Principal,
    clear_sign_in_failures,
    close_session,
    new_secret,
    open_session,
    principal_for_token,
    recent_sign_in_failures,
    record_sign_in_failure,
)
from db.vocabulary import AuditEventType
from db.worklist import StudyFilter, change_marker, list_studies, slice_scores_of, study_detail
from triage.web.access_log import record_access
from triage.web.auth import (
    ACKNOWLEDGERS,
    FAILURE_WINDOW,
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    DbSession,
    PageReader,
    find_principal,
    require,
    sign_in_wait,
)
from triage.web.context import client_address, web_context
from triage.web.curve import curve_svg, slice_curve
from triage.web.key_images import thumbnail_png, top_key_image
from triage.web.routes_studies import StudyId, acknowledge_study
from triage.web.schemas import DEMO_LABEL, TRIAGE_AID, ResultDetail, ResultSummary, result_label
from triage.web.study_views import detail, list_item

router = APIRouter(include_in_schema=False)
# Autoescaping everything the templates print: study descriptions come from scanners.
templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True),
    )
)
WORKLIST_PAGE_SIZE = 100
KEEPALIVE_SECONDS = 15.0
PageAcknowledger = Annotated[Principal, Depends(require(*ACKNOWLEDGERS, page=True))]


def ago(value: datetime, now: datetime | None = None) -> str:
    """'12 min', '3 h 5 min', '2 d': time since ``value`` for a reading-room glance."""
    minutes = max(0, int(((now or utcnow()) - value).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // (24 * 60)} d"


def flagged_findings(result: ResultSummary | ResultDetail) -> list[tuple[str, float]]:
    """(class, probability) of every flagged class, most probable first (the badges)."""
    found = [(name, result.probabilities.get(name, 0.0)) for name, on in result.flags.items() if on]
    return sorted(found, key=lambda pair: -pair[1])


templates.env.globals.update(
    flagged_findings=flagged_findings,
    ago=ago,
    result_label=result_label,
    TRIAGE_AID=TRIAGE_AID,
    DEMO_LABEL=DEMO_LABEL,
)


def _require_csrf(principal: Principal, sent: str) -> None:
    """403 unless the form carried this session's CSRF token."""
    if principal.csrf_token is None or not hmac.compare_digest(sent, principal.csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing or wrong CSRF token")


def _page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/")
def root() -> RedirectResponse:
    """The worklist is the home page."""
    return RedirectResponse("/worklist", status_code=status.HTTP_303_SEE_OTHER)


def _signin_form(request: Request, message: str | None, status_code: int = 200) -> Response:
    token = new_secret()
    response = _page(
        request, "signin.html", {"csrf": token, "message": message}, status_code=status_code
    )
    response.set_cookie(
        SIGNIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
        secure=web_context(request).tls, path="/signin",
    )  # fmt: skip
    return response


@router.get("/signin")
def signin_page(request: Request) -> Response:
    """The sign-in form (a token, as printed by ``triage users add``)."""
    return _signin_form(request, None)


@router.post("/signin")
def signin(
    request: Request,
    session: DbSession,
    token: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """Check the token; after repeated failures from one address, make it wait first."""
    cookie = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    if not cookie or not csrf_token or not hmac.compare_digest(cookie, csrf_token):
        return _signin_form(request, "The form expired; please sign in again.", 403)
    address = client_address(request)
    wait = sign_in_wait(*recent_sign_in_failures(session, address, FAILURE_WINDOW))
    if wait > 0:
        response = _signin_form(
            request, f"Too many failed sign-ins; try again in {math.ceil(wait)} s.", 429
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    principal = principal_for_token(session, token.strip()) if token.strip() else None
    if principal is None:
        record_sign_in_failure(session, address)
        record_event(
            session, AuditEventType.SIGN_IN_FAILED, actor="web:unknown",
            detail={"address": address, "action": "sign in"},
        )  # fmt: skip
        session.commit()
        return _signin_form(request, "Unknown or revoked token.", 401)
    clear_sign_in_failures(session, address)
    hours = web_context(request).settings.web.session_hours
    session_id, _ = open_session(session, principal.user_id, timedelta(hours=hours))
    record_access(session, request, principal, AuditEventType.USER_SIGNED_IN, action="sign in")
    session.commit()
    response = RedirectResponse("/worklist", status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=int(hours * 3600), httponly=True,
        samesite="strict", secure=web_context(request).tls, path="/",
    )  # fmt: skip
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/signin")
    return response


@router.post("/signout")
def signout(
    request: Request,
    principal: PageReader,
    session: DbSession,
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """End the session (CSRF-checked, so another site cannot sign a reader out)."""
    _require_csrf(principal, csrf_token)
    close_session(session, request.cookies.get(SESSION_COOKIE, ""))
    record_access(session, request, principal, AuditEventType.USER_SIGNED_OUT, action="sign out")
    session.commit()
    response = RedirectResponse("/signin", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _worklist_rows(request: Request, principal: Principal, session: DbSession) -> dict[str, Any]:
    rows, total = list_studies(session, StudyFilter(), limit=WORKLIST_PAGE_SIZE)
    record_access(
        session, request, principal, AuditEventType.WORKLIST_VIEWED, action="worklist page",
        detail={"studies": [row["study_instance_uid"] for row in rows], "total": total},
    )  # fmt: skip
    session.commit()
    curves = web_context(request).curves.get_many(
        [row["prediction_id"] for row in rows if row["prediction_id"] is not None],
        lambda ids: slice_scores_of(session, ids),
    )
    items = [(list_item(row), curves.get(row["prediction_id"], "")) for row in rows]
    spool = web_context(request).settings.spool.dir
    key_images = {
        item.id: f"/studies/{item.id}/key-image.png"
        for item, _ in items
        if item.result is not None
        and item.result.assessed
        and top_key_image(
            spool, item.study_instance_uid, item.result.study_version, item.result.bundle_sha256
        )
    }
    return {
        "items": items,
        "key_images": key_images,
        "total": total,
        "principal": principal,
        "csrf": principal.csrf_token,
        "can_acknowledge": principal.role in ACKNOWLEDGERS,
        "now": utcnow(),
    }


@router.get("/worklist", response_class=HTMLResponse)
def worklist(request: Request, principal: PageReader, session: DbSession) -> Response:
    """The worklist: most pressing first, live."""
    return _page(request, "worklist.html", _worklist_rows(request, principal, session))


@router.get("/worklist/rows", response_class=HTMLResponse)
def worklist_rows(request: Request, principal: PageReader, session: DbSession) -> Response:
    """The worklist's rows alone, fetched by the page when the live stream says so."""
    return _page(request, "_rows.html", _worklist_rows(request, principal, session))


@router.post("/worklist/{study_id}/acknowledge")
def acknowledge_form(
    request: Request,
    study_id: StudyId,
    principal: PageAcknowledger,
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """The worklist's acknowledge button (CSRF-checked, audited)."""
    _require_csrf(principal, csrf_token)
    acknowledge_study(request, study_id, principal)
    return RedirectResponse("/worklist", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(
    request: Request, study_id: StudyId, principal: PageReader, session: DbSession
) -> Response:
    """One study in full, for the reader who wants to know why it ranks where it does."""
    found = study_detail(session, study_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such study")
    record_access(
        session, request, principal, AuditEventType.STUDY_VIEWED, action="study page",
        study_instance_uid=found["study_instance_uid"],
    )  # fmt: skip
    session.commit()
    view = detail(found)
    scores = [s.model_dump() for s in view.result.slice_scores] if view.result else []
    curve = slice_curve(scores)
    return _page(
        request,
        "study.html",
        {"study": view, "curve": curve_svg(curve), "principal": principal,
         "csrf": principal.csrf_token, "now": utcnow()},
    )  # fmt: skip


@router.get("/studies/{study_id}/key-image.png")
def key_image(
    request: Request, study_id: StudyId, principal: PageReader, session: DbSession
) -> Response:
    """The top key image (Grad-CAM over the slice the model saw) as a small PNG; audited."""
    found = study_detail(session, study_id)
    result = found["result"] if found else None
    path = (
        top_key_image(
            web_context(request).settings.spool.dir,
            found["study_instance_uid"],
            result["study_version"],
            result["bundle_sha256"],
        )
        if found and result
        else None
    )
    if found is None or path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no key image for this study")
    record_access(
        session, request, principal, AuditEventType.STUDY_VIEWED, action="key image",
        study_instance_uid=found["study_instance_uid"],
    )  # fmt: skip
    session.commit()
    return Response(thumbnail_png(path), media_type="image/png")


def _authenticate_once(request: Request) -> Principal | None:
    # A short session of its own: the stream must not hold a database connection open.
    with web_context(request).sessions() as session:
        try:
            return find_principal(request, session)
        except HTTPException:
            return None


def _marker(request: Request) -> str:
    with web_context(request).sessions() as session:
        return change_marker(session)


@router.get("/events")
async def events(request: Request) -> Response:
    """Server-sent events: ``changed`` whenever a study arrives, is predicted, delivered or
    acknowledged (the database is polled cheaply every TRIAGE_WEB_POLL_SECONDS)."""
    principal = await run_in_threadpool(_authenticate_once, request)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="a session is required")
    poll = web_context(request).settings.web.live_poll_seconds

    async def stream() -> Any:
        last = await run_in_threadpool(_marker, request)
        quiet = 0.0
        yield "retry: 3000\n\n"
        while not await request.is_disconnected():
            await asyncio.sleep(poll)
            marker = await run_in_threadpool(_marker, request)
            if marker != last:
                last, quiet = marker, 0.0
                yield f"event: changed\ndata: {json.dumps({'at': utcnow().isoformat()})}\n\n"
            else:
                quiet += poll
                if quiet >= KEEPALIVE_SECONDS:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )
