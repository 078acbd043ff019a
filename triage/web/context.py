"""What every request handler needs from the running app: settings and the session factory.

Kept on ``app.state`` by :func:`triage.web.app.create_app` (no module globals), read here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from triage.settings import Settings
from triage.web.curve import CurveCache


@dataclass(frozen=True)
class WebContext:
    """The settings and database of one app instance, and its cache of slice curves."""

    settings: Settings
    sessions: sessionmaker[Session]
    curves: CurveCache = field(default_factory=CurveCache)

    @property
    def tls(self) -> bool:
        """Whether the app serves HTTPS (cookies are then marked Secure)."""
        return self.settings.web.tls_cert is not None


def web_context(request: Request) -> WebContext:
    """The context of the app serving ``request``."""
    context: WebContext = request.app.state.web
    return context


def db_session(request: Request) -> Iterator[Session]:
    """A database session for one request; the handler commits what it writes."""
    with web_context(request).sessions() as session:
        yield session


def client_address(request: Request) -> str:
    """The peer address the access log records (no proxy headers are trusted)."""
    return request.client.host if request.client else "unknown"
