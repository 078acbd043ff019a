"""A real uvicorn server of the web app on a free port, over a fresh migrated database,
with one user of each role."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from db.models import AuditEvent
from db.users import add_user
from db.vocabulary import WebRole
from triage.settings import Settings
from triage.web.app import create_app
from triage.web.server import serve_in_thread, server_for_app


@dataclass
class WebRig:
    """The running app: its URL, a token per role, and its database."""

    url: str
    tokens: dict[WebRole, str]
    sessions: sessionmaker[Session]
    settings: Settings

    def client(
        self, role: WebRole | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Client:
        """An HTTP client, with the bearer token of ``role`` when given."""
        sent = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers={**sent, **(headers or {})}, timeout=10)

    def audit_count(self) -> int:
        """Rows in the audit log now."""
        with self.sessions() as session:
            return session.query(AuditEvent).count()

    def audit_rows(self, after: int = 0) -> list[AuditEvent]:
        """Audit rows with an id above ``after``, oldest first."""
        with self.sessions() as session:
            return (
                session.query(AuditEvent).filter(AuditEvent.id > after)
                .order_by(AuditEvent.id).all()
            )  # fmt: skip

    def seed(self, build: Callable[[Session], Any]) -> Any:
        """Run ``build(session)`` and commit."""
        with self.sessions() as session:
            value = build(session)
            session.commit()
            return value


def serve(settings: Settings, sessions: sessionmaker[Session]) -> tuple[uvicorn.Server, str]:
    """Start uvicorn on a free port in a thread; (server, base URL) once it listens."""
    settings = settings.model_copy(update={"web": settings.web.model_copy(update={"port": 0})})
    server = server_for_app(create_app(settings, sessions), settings)
    server.config.log_level = "warning"
    return server, f"http://127.0.0.1:{serve_in_thread(server)}"


@pytest.fixture
def web(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[WebRig]:
    """The web app over a fresh database of each kind, one user per role."""
    settings = make_settings(database_url=database_url, web_min_free_mb=0, web_poll_seconds=0.2)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    tokens = {}
    with sessions() as session:
        for role in WebRole:
            _, tokens[role] = add_user(session, f"{role.value}-user", role)
        session.commit()
    server, url = serve(settings, sessions)
    try:
        yield WebRig(url, tokens, sessions, settings)
    finally:
        server.should_exit = True
        time.sleep(0.1)
        engine.dispose()
