"""Who is asking: a bearer token (API clients) or a session cookie (browsers), and what
their role lets them do.

A cookie is sent by the browser on its own, so every state-changing request that a cookie
authenticates must also carry the session's CSRF token (form field or ``X-CSRF-Token``
header); a bearer token is never sent on its own, so it needs none. Repeated failed
sign-ins from one address must wait longer and longer before the next is even checked.
"""

import hmac
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from db.models import utcnow
from db.users import Principal, principal_for_session, principal_for_token
from db.vocabulary import WebRole
from triage.web.context import db_session

# No ``from __future__ import annotations`` here: FastAPI must see the dependencies of the
# closures built by require() as objects, not as strings to resolve in module globals.

DbSession = Annotated[Session, Depends(db_session)]

SESSION_COOKIE = "triage_session"
SIGNIN_CSRF_COOKIE = "triage_signin_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"

READERS = (WebRole.RADIOLOGIST, WebRole.AUDITOR, WebRole.ADMIN)
ACKNOWLEDGERS = (WebRole.RADIOLOGIST, WebRole.ADMIN)
AUDITORS = (WebRole.AUDITOR, WebRole.ADMIN)

FAILURE_WINDOW = timedelta(minutes=15)
FREE_FAILURES = 3  # a few typos cost nothing
FIRST_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 300.0


class SignInRequired(Exception):
    """A page was asked for without a session: the browser is sent to the sign-in page."""


def _unauthorized(why: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=why, headers={"WWW-Authenticate": "Bearer"}
    )


def find_principal(request: Request, session: Session) -> Principal | None:
    """The principal of a valid bearer token or session cookie; None when neither is sent.

    Raises
    ------
    HTTPException
        401 when an Authorization header is sent but is not a valid bearer token: a wrong
        token must never fall back to a cookie.
    """
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 256:
            raise _unauthorized("expected Authorization: Bearer TOKEN")
        found = principal_for_token(session, token)
        if found is None:
            raise _unauthorized("unknown or revoked token")
        return found
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and len(cookie) <= 256:
        return principal_for_session(session, cookie)
    return None


def current_principal(request: Request, session: DbSession) -> Principal:
    """The caller of an API endpoint; 401 without valid credentials."""
    found = find_principal(request, session)
    if found is None:
        raise _unauthorized("a token or a session is required")
    return found


def page_principal(request: Request, session: DbSession) -> Principal:
    """The caller of a page; without a session the browser goes to the sign-in page."""
    try:
        found = find_principal(request, session)
    except HTTPException:
        found = None
    if found is None:
        raise SignInRequired()
    return found


def require(*roles: WebRole, page: bool = False) -> Callable[[Principal], Principal]:
    """A dependency admitting only ``roles`` (403 for anyone else)."""

    dependency = page_principal if page else current_principal

    def check(principal: Annotated[Principal, Depends(dependency)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {principal.role.value} may not do this",
            )
        return principal

    return check


async def check_csrf(request: Request, principal: Principal) -> None:
    """Refuse a cookie-authenticated state change without the session's CSRF token (403)."""
    if principal.csrf_token is None:
        return  # bearer token: not sent by a browser on its own
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, principal.csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing or wrong CSRF token")


def sign_in_wait(failures: int, newest: datetime | None, now: datetime | None = None) -> float:
    """Seconds an address must still wait before its next sign-in is checked.

    Free for the first :data:`FREE_FAILURES` failures, then :data:`FIRST_WAIT_SECONDS`
    doubled with each further failure (capped at :data:`MAX_WAIT_SECONDS`), counted from the newest failure.
    """
    if failures < FREE_FAILURES or newest is None:
        return 0.0
    wait = min(MAX_WAIT_SECONDS, FIRST_WAIT_SECONDS * 2.0 ** (failures - FREE_FAILURES))
    elapsed = ((now or utcnow()) - newest).total_seconds()
    return max(0.0, wait - elapsed)


Reader = Annotated[Principal, Depends(require(*READERS))]
Acknowledger = Annotated[Principal, Depends(require(*ACKNOWLEDGERS))]
Auditor = Annotated[Principal, Depends(require(*AUDITORS))]
PageReader = Annotated[Principal, Depends(require(*READERS, page=True))]
