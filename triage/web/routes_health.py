"""Liveness and readiness: open to the load balancer, and never any patient data.

Ready means the database answers, the broker takes a connection, and the spool has more
free space than ``TRIAGE_WEB_MIN_FREE_MB`` (a full spool makes the listener refuse images).
"""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from db.worklist import database_ready
from triage.queue import make_celery
from triage.settings import Settings
from triage.web.context import web_context
from triage.web.schemas import Check, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


def _database(request: Request) -> Check:
    try:
        with web_context(request).sessions() as session:
            database_ready(session)
        return Check(ok=True, detail="answers")
    except Exception as exc:  # any failure means not ready; the type says which
        return Check(ok=False, detail=type(exc).__name__)


def _broker(settings: Settings) -> Check:
    try:
        with make_celery(settings).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return Check(ok=True, detail=str(connection.transport.driver_type))
    except Exception as exc:
        return Check(ok=False, detail=type(exc).__name__)


def _spool(settings: Settings) -> Check:
    folder = settings.spool.dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free_mb = shutil.disk_usage(folder).free // 2**20
    return Check(ok=free_mb >= settings.web.min_free_mb, detail=f"{free_mb} MiB free")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
def readyz(request: Request) -> Readiness | JSONResponse:
    """Database, broker and spool disk space; 503 when any is not ready."""
    settings = web_context(request).settings
    checks = {
        "database": _database(request),
        "broker": _broker(settings),
        "spool": _spool(settings),
    }
    ready = Readiness(ready=all(c.ok for c in checks.values()), checks=checks)
    if not ready.ready:
        return JSONResponse(ready.model_dump(), status_code=503)
    return ready
