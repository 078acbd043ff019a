"""The container health probes (triage/health.py) against real peers.

Each probe must say "healthy" for a live service and "unhealthy" for a dead one, or a
container that cannot take studies keeps receiving them (and one that can is restarted).
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from listener.service import start_listener
from tests.worker.conftest import PrivateRedis, free_port
from triage import health
from triage.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def listener(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def start(**overrides: Any) -> Any:
        service = start_listener(make_settings(**overrides), dispatcher=lambda *a: "t", port=0)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def test_dicom_probe_sees_a_listener_that_accepts(listener: Callable[..., Any]) -> None:
    service = listener()
    healthy, why = health.dicom_answers("127.0.0.1", service.port, "TRIAGE")
    assert healthy and "accepted" in why


def test_dicom_probe_counts_an_allowlist_rejection_as_alive(listener: Callable[..., Any]) -> None:
    service = listener(allowed_calling_aets=["CT1"])
    healthy, why = health.dicom_answers("127.0.0.1", service.port, "TRIAGE")
    assert healthy and "rejected" in why


def test_dicom_probe_fails_where_nothing_listens() -> None:
    healthy, _ = health.dicom_answers("127.0.0.1", free_port(), "TRIAGE", timeout=2)
    assert not healthy


def test_dicom_probe_fails_on_a_port_that_never_answers_dicom() -> None:
    """A socket that accepts and stays silent (a hung listener) is not healthy."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        healthy, _ = health.dicom_answers("127.0.0.1", server.getsockname()[1], "TRIAGE", timeout=1)
    assert not healthy


def test_tcp_probe(listener: Callable[..., Any]) -> None:
    assert health.tcp_accepts("127.0.0.1", listener().port)[0]
    assert not health.tcp_accepts("127.0.0.1", free_port(), timeout=1)[0]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/metrics" else 503)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def test_http_probe_wants_a_2xx() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert health.http_answers(f"{base}/metrics") == (True, "HTTP 200")
        assert health.http_answers(f"{base}/other") == (False, "HTTP 503")
    finally:
        server.shutdown()
        server.server_close()
    assert not health.http_answers(f"http://127.0.0.1:{free_port()}/metrics", timeout=1)[0]


@pytest.mark.redis
def test_celery_probe_answers_for_a_running_worker_only(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    redis = PrivateRedis(free_port())
    redis.start()
    node = "celery@health-probe-test"
    settings = make_settings(broker_url=redis.url)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from triage.queue import make_celery; from triage.settings import load_settings;"
            "make_celery(load_settings()).worker_main(sys.argv[1:])",
            "worker",
            "--pool",
            "solo",
            "-n",
            node,
            "--without-gossip",
            "--without-mingle",
            "--queues",
            "health-probe-test",
        ],
        env={
            "TRIAGE_BROKER_URL": redis.url,
            "TRIAGE_VAR_DIR": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert not health.celery_answers(settings, "celery@nobody-here", timeout=1)[0]
        for _ in range(30):
            healthy, why = health.celery_answers(settings, node, timeout=1)
            if healthy:
                break
        assert healthy, why
        worker.kill()
        worker.wait()
        assert not health.celery_answers(settings, node, timeout=1)[0]
    finally:
        worker.kill()
        redis.stop()
    redis_gone = health.celery_answers(settings, node, timeout=1)
    assert not redis_gone[0]


def test_probe_command_exits_by_health(
    listener: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = listener()
    monkeypatch.setenv("TRIAGE_DICOM_PORT", str(service.port))
    health.get_settings.cache_clear()  # type: ignore[attr-defined]
    try:
        ok = CliRunner().invoke(health.main, ["dicom"])
        assert ok.exit_code == 0 and ok.output.startswith("healthy"), ok.output
        monkeypatch.setenv("TRIAGE_DICOM_PORT", str(free_port()))
        health.get_settings.cache_clear()  # type: ignore[attr-defined]
        bad = CliRunner().invoke(health.main, ["--timeout", "1", "dicom"])
        assert bad.exit_code == 1 and bad.output.startswith("unhealthy"), bad.output
    finally:
        health.get_settings.cache_clear()  # type: ignore[attr-defined]
