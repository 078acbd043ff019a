"""Which receive path the SCP runs, chosen by ``dicom_fast_path`` and pinned to pynetdicom's version.

The streaming path subclasses pynetdicom internals, so it is used only with the pynetdicom
versions it was tested with; any other version gets pynetdicom's stock path and a
warning an operator sees when ``triage listen`` starts.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pynetdicom.transport import RequestHandler

from listener.fastpath import make_request_handler
from listener.fastpath.upper_layer import StreamingRequestHandler
from training.phantom import PhantomStudy

REPO = Path(__file__).resolve().parents[2]
UNTESTED_VERSION = "3.0.999"
FALLBACK_WARNING = "is not one the streaming receive path was tested with"
_NAMED_AT_START = os.environ.get("TRIAGE_DICOM_FAST_PATH", "true")  # tests see TRIAGE_* cleared


def _fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and FALLBACK_WARNING in r.getMessage()
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "stock-path"])
def test_running_scp_uses_the_request_handler_of_the_chosen_path(
    fast: bool,
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
) -> None:
    service = run_listener(make_settings(database_url=database_url, dicom_fast_path=fast))

    handler = service.scp.server.RequestHandlerClass

    assert issubclass(handler, StreamingRequestHandler) is fast
    assert issubclass(handler, RequestHandler)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_this_runs_listeners_use_the_path_the_environment_names(
    dicom_fast_path: bool,
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
) -> None:
    """``TRIAGE_DICOM_FAST_PATH=false pytest tests/listener`` really exercises the stock path."""
    expected = _NAMED_AT_START.strip().lower() not in ("false", "0", "off", "no", "f", "n")
    service = run_listener(make_settings(database_url=database_url))

    handler = service.scp.server.RequestHandlerClass

    assert dicom_fast_path is expected
    assert issubclass(handler, StreamingRequestHandler) is expected


def test_both_paths_store_the_same_bytes(
    phantoms: Callable[..., PhantomStudy],
    tmp_path: Path,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
) -> None:
    study = phantoms("paths-agree", slices=3, size=64, seed=21)
    stored: dict[bool, dict[str, bytes]] = {}
    for fast in (True, False):
        root = tmp_path / ("fast" if fast else "stock")  # each its own SQLite database
        settings = make_settings(
            var_dir=root,
            database_url="",
            spool_dir=root / "spool",
            quarantine_dir=root / "quarantine",
            dicom_fast_path=fast,
        )
        sent = storescu(run_listener(settings).port, study.files)
        assert sent.ok, sent.output
        stored[fast] = {
            str(p.relative_to(settings.spool.dir)): p.read_bytes()
            for p in settings.spool.dir.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }

    assert len(stored[True]) == len(study.files)
    assert stored[True] == stored[False]


def test_untested_pynetdicom_gets_the_stock_handler_and_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", UNTESTED_VERSION)
    caplog.set_level(logging.WARNING, logger="listener.fastpath")

    handler = make_request_handler()

    assert handler is RequestHandler
    warnings = _fallback_warnings(caplog)
    assert len(warnings) == 1
    assert UNTESTED_VERSION in warnings[0].getMessage()


def test_tested_pynetdicom_gets_the_streaming_handler_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="listener.fastpath")

    handler = make_request_handler()

    assert issubclass(handler, StreamingRequestHandler)
    assert _fallback_warnings(caplog) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_listener_on_untested_pynetdicom_warns_once_and_serves_on_the_stock_path(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    recorded: Any,
) -> None:
    study = phantoms("untested-version", slices=2, size=64, seed=22)
    monkeypatch.setattr(pynetdicom, "__version__", UNTESTED_VERSION)
    caplog.set_level(logging.INFO, logger="listener")

    service = run_listener(make_settings(database_url=database_url, dicom_fast_path=True))
    sent = storescu(service.port, study.files)

    assert service.scp.server.RequestHandlerClass is RequestHandler
    assert len(_fallback_warnings(caplog)) == 1
    assert sent.ok, sent.output
    assert len(recorded.instances(study.study_uid)) == 2


_LISTEN_ON_UNTESTED_PYNETDICOM = f"""
import sys
import pynetdicom
pynetdicom.__version__ = {UNTESTED_VERSION!r}
from triage.cli import main
sys.exit(main(["listen"]))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_triage_listen_shows_the_version_warning_at_start(tmp_path: Path) -> None:
    """What an operator sees on the console when pynetdicom was upgraded under us."""
    var = tmp_path / "var"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")},
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "TRIAGE_VAR_DIR": str(var),
        "TRIAGE_SPOOL_DIR": str(var / "spool"),
        "TRIAGE_QUARANTINE_DIR": str(var / "quarantine"),
        "TRIAGE_DICOM_BIND": "127.0.0.1",
        "TRIAGE_DICOM_PORT": str(_free_port()),
    }
    log_path = tmp_path / "listen.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LISTEN_ON_UNTESTED_PYNETDICOM],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "listening as" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "triage listen did not start"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    lines = log_path.read_text(errors="replace").splitlines()

    warnings = [line for line in lines if FALLBACK_WARNING in line]
    assert len(warnings) == 1, lines
    assert " WARNING " in warnings[0] and UNTESTED_VERSION in warnings[0]
