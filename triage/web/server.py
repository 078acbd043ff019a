"""Run the web app under uvicorn (``triage web``; ``triage serve`` starts it in a thread).

HTTPS when ``TRIAGE_WEB_TLS_CERT``/``TRIAGE_WEB_TLS_KEY`` are set. Uvicorn's access log is
kept: its lines hold the method, path and status, and no path carries patient data
(studies are addressed by database id, filters by AE title, state and time).
"""

from __future__ import annotations

import threading

import uvicorn

from db.migrate import upgrade_to_head
from triage.settings import Settings
from triage.web.app import create_app


def make_server(settings: Settings) -> uvicorn.Server:
    """A uvicorn server for the app on ``settings.web`` (bind, port, TLS); not started."""
    upgrade_to_head(settings.database.url.get_secret_value())
    web = settings.web
    config = uvicorn.Config(
        create_app(settings),
        host=web.bind,
        port=web.port,
        ssl_certfile=str(web.tls_cert) if web.tls_cert else None,
        ssl_keyfile=str(web.tls_key) if web.tls_key else None,
        log_config=None,  # the entry point configured logging
        proxy_headers=False,  # the access log records the real peer, never a header's claim
        server_header=False,
        timeout_graceful_shutdown=3,
    )
    return uvicorn.Server(config)


def run(settings: Settings) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM)."""
    make_server(settings).run()


def start_in_thread(settings: Settings) -> tuple[uvicorn.Server, threading.Thread]:
    """Serve from a daemon thread (beside the listener in ``triage serve``); stop with
    ``server.should_exit = True``."""
    server = make_server(settings)
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    return server, thread
