"""Run the web app under uvicorn (``triage web``; ``triage serve`` starts it in a thread).

HTTPS when ``TRIAGE_WEB_TLS_CERT``/``TRIAGE_WEB_TLS_KEY`` are set. Uvicorn's access log is
kept: its lines hold the method, path and status, and no path carries patient data
(studies are addressed by database id, filters by AE title, state and time).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from db.migrate import upgrade_to_head
from triage.settings import Settings
from triage.web.app import create_app


def _config(app: Any, settings: Settings) -> uvicorn.Config:
    web = settings.web
    return uvicorn.Config(
        app,
        host=web.bind,
        port=web.port,
        ssl_certfile=str(web.tls_cert) if web.tls_cert else None,
        ssl_keyfile=str(web.tls_key) if web.tls_key else None,
        log_config=None,  # the entry point configured logging
        proxy_headers=False,  # the access log records the real peer, never a header's claim
        server_header=False,
        timeout_graceful_shutdown=3,
    )


def make_server(settings: Settings) -> uvicorn.Server:
    """A uvicorn server for the app on ``settings.web`` (bind, port, TLS); not started."""
    upgrade_to_head(settings.database.url.get_secret_value())
    return uvicorn.Server(_config(create_app(settings), settings))


def run(settings: Settings) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM)."""
    make_server(settings).run()


def serve_in_thread(server: uvicorn.Server, *, timeout: float = 15.0) -> int:
    """Run ``server`` in a daemon thread; the port it listens on once it does (port 0 in the
    settings picks a free one). Stop it with ``server.should_exit = True``.

    Raises
    ------
    RuntimeError
        When the server has not started within ``timeout`` seconds.
    """
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not (server.started and server.servers):
        if not thread.is_alive():  # uvicorn exits its thread when it cannot bind
            raise RuntimeError("the web server stopped at start (see its log: port in use?)")
        if time.monotonic() > deadline:
            raise RuntimeError("the web server did not start")
        time.sleep(0.02)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port


def server_for_app(app: Any, settings: Settings) -> uvicorn.Server:
    """A uvicorn server for an app built elsewhere (tests, benchmarks) on ``settings.web``."""
    return uvicorn.Server(_config(app, settings))
