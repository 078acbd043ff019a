"""Build the web app: routes, static assets, security headers, the metrics registry.

One function, :func:`create_app`, so that the server, the tests and the benchmark all run
the same application over the database they choose.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from triage.settings import Settings
from triage.web import (
    metrics,
    routes_audit,
    routes_health,
    routes_pages,
    routes_studies,
)
from triage.web.auth import SignInRequired
from triage.web.context import WebContext
from triage.web.schemas import TRIAGE_AID
from triage.web.security import SecurityHeaders

STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings, sessions: sessionmaker[Session] | None = None) -> FastAPI:
    """The application for ``settings`` (its database unless ``sessions`` is given)."""
    if sessions is None:
        sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))
    app = FastAPI(
        title="pacs-triage",
        version="1",
        description=(
            f"{TRIAGE_AID}. Head-CT worklist, study results, audit log and metrics. "
            "API clients send `Authorization: Bearer TOKEN` (`triage users add`)."
        ),
    )
    app.state.web = WebContext(settings=settings, sessions=sessions)
    app.state.metrics_registry = metrics.make_registry(sessions)
    for module in (routes_studies, routes_audit, routes_health, metrics, routes_pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(SignInRequired)
    def _to_signin(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse("/signin", status_code=303)

    app.add_middleware(SecurityHeaders, tls=settings.web.tls_cert is not None)
    return app
