"""Web users, their browser sessions and failed sign-ins: every query the web app's auth needs.

Credentials are never stored: a token or session id is kept only as its sha256, so the
database alone cannot be used to sign in. Tokens are 32 random bytes, far beyond guessing,
so a fast unsalted hash is enough (a password would need a slow one).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.models import SignInFailure, WebSession, WebUser, utcnow
from db.vocabulary import WebRole

TOKEN_BYTES = 32


class UserExists(ValueError):
    """A user with this name is already recorded (names are unique, revoked ones included)."""


def token_hash(token: str) -> str:
    """The sha256 hex digest under which a token or session id is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_secret() -> str:
    """A fresh URL-safe secret of :data:`TOKEN_BYTES` random bytes."""
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class Principal:
    """Who is asking: the user, their role and, for a browser, the session's CSRF token."""

    user_id: int
    name: str
    role: WebRole
    csrf_token: str | None = None  # set only for cookie sessions

    @property
    def actor(self) -> str:
        """The audit log's actor text for this person."""
        return f"web:{self.name}"


def add_user(session: Session, name: str, role: WebRole) -> tuple[WebUser, str]:
    """Record a new user; returns the row and the token, which exists nowhere else.

    Raises
    ------
    UserExists
        When ``name`` is taken.
    """
    if session.scalar(select(WebUser.id).where(WebUser.name == name)) is not None:
        raise UserExists(f"user {name!r} exists")
    token = new_secret()
    user = WebUser(name=name, role=role, token_sha256=token_hash(token))
    session.add(user)
    session.flush()
    return user, token


def list_users(session: Session) -> Sequence[WebUser]:
    """Every user, revoked ones included, by name."""
    return session.scalars(select(WebUser).order_by(WebUser.name)).all()


def revoke_user(session: Session, name: str) -> bool:
    """Revoke a user's token and end their sessions; False if no active user has ``name``."""
    user = session.scalars(
        select(WebUser).where(WebUser.name == name, WebUser.revoked_at.is_(None))
    ).one_or_none()
    if user is None:
        return False
    user.revoked_at = utcnow()
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    return True


def principal_for_token(session: Session, token: str) -> Principal | None:
    """The active user holding ``token``, or None (unknown or revoked)."""
    user = session.scalars(
        select(WebUser).where(
            WebUser.token_sha256 == token_hash(token), WebUser.revoked_at.is_(None)
        )
    ).one_or_none()
    return None if user is None else Principal(user.id, user.name, user.role)


def open_session(session: Session, user_id: int, lifetime: timedelta) -> tuple[str, str]:
    """Start a browser session; returns (session id for the cookie, CSRF token)."""
    session_id, csrf = new_secret(), new_secret()
    session.add(
        WebSession(
            session_sha256=token_hash(session_id),
            user_id=user_id,
            csrf_token=csrf,
            expires_at=utcnow() + lifetime,
        )
    )
    return session_id, csrf


def principal_for_session(
    session: Session, session_id: str, *, now: datetime | None = None
) -> Principal | None:
    """The user of an unexpired session whose user is still active, or None."""
    row = session.execute(
        select(WebSession, WebUser)
        .join(WebUser, WebUser.id == WebSession.user_id)
        .where(
            WebSession.session_sha256 == token_hash(session_id),
            WebSession.expires_at > (now or utcnow()),
            WebUser.revoked_at.is_(None),
        )
    ).one_or_none()
    if row is None:
        return None
    web_session, user = row
    return Principal(user.id, user.name, user.role, web_session.csrf_token)


def close_session(session: Session, session_id: str) -> None:
    """End a browser session (sign-out); unknown ids are ignored."""
    session.execute(delete(WebSession).where(WebSession.session_sha256 == token_hash(session_id)))


def record_sign_in_failure(session: Session, address: str) -> None:
    """Remember a refused sign-in from ``address`` (caller commits)."""
    session.add(SignInFailure(address=address[:64]))


def recent_sign_in_failures(
    session: Session, address: str, window: timedelta, *, now: datetime | None = None
) -> tuple[int, datetime | None]:
    """(failures from ``address`` within ``window``, time of the newest) for the slowdown."""
    count, newest = session.execute(
        select(func.count(SignInFailure.id), func.max(SignInFailure.at)).where(
            SignInFailure.address == address[:64],
            SignInFailure.at > (now or utcnow()) - window,
        )
    ).one()
    if newest is not None and newest.tzinfo is None:  # func.max bypasses the column type
        newest = newest.replace(tzinfo=utcnow().tzinfo)
    return int(count), newest


def clear_sign_in_failures(session: Session, address: str) -> None:
    """Forget an address's failures after it signed in successfully."""
    session.execute(delete(SignInFailure).where(SignInFailure.address == address[:64]))
