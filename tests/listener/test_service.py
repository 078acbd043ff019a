"""The listener as operators run it: ``triage listen`` in its own process, killed and restarted.

The process uses its default dispatcher (Celery over the file-system broker under
``TRIAGE_VAR_DIR/broker``), a SQLite file or PostgreSQL database and ``TRIAGE_*`` settings.
``triage audit studies --format json`` is then read as an operator would read it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from training.phantom import PhantomStudy

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ListenerProcess:
    """``python -m triage.cli listen`` with a given environment; start, kill, restart."""

    def __init__(self, var_dir: Path, database_url: str, **settings: str) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        self.database_url = database_url
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "TRIAGE_VAR_DIR": str(var_dir),
            "TRIAGE_SPOOL_DIR": str(var_dir / "spool"),
            "TRIAGE_QUARANTINE_DIR": str(var_dir / "quarantine"),
            "TRIAGE_DATABASE_URL": database_url,
            "TRIAGE_DICOM_BIND": "127.0.0.1",
            "TRIAGE_DICOM_PORT": str(self.port),
            "TRIAGE_QUIET_SECONDS": "0.2",
        }
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, poll: Callable[..., Any], **settings: str) -> None:
        self.settings.update(settings)
        env = {**self.env, **{f"TRIAGE_{k.upper()}": v for k, v in self.settings.items()}}
        self.starts += 1
        log = open(self.var_dir.parent / f"listener-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "triage.cli", "listen"],
            cwd=self.var_dir.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        poll(self._accepting, timeout=60, what="the listener to accept connections")

    def _accepting(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.var_dir.parent.glob("listener-*"))
        )

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "triage.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def query(self, sql: str, **params: Any) -> list[Any]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(sql), params))
        finally:
            engine.dispose()

    def state(self, study_uid: str) -> str | None:
        rows = self.query("SELECT state FROM studies WHERE study_instance_uid = :u", u=study_uid)
        return rows[0][0] if rows else None

    def events(self, event_type: str, study_uid: str) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT detail FROM audit_events WHERE event_type = :t AND study_instance_uid = :u",
            t=event_type,
            u=study_uid,
        )
        return [row[0] if isinstance(row[0], dict) else json.loads(row[0]) for row in rows]

    def queued_messages(self) -> list[Path]:
        return [p for p in (self.var_dir / "broker" / "queue").iterdir() if p.is_file()]


@pytest.fixture
def listener_process(
    tmp_path: Path, database_url: str, dicom_fast_path: bool
) -> Iterator[Callable[..., ListenerProcess]]:
    """Listener processes on a fresh SQLite file or PostgreSQL database (both are run),
    on this run's receive path unless a test names one."""
    made: list[ListenerProcess] = []

    def make(**settings: str) -> ListenerProcess:
        settings.setdefault("dicom_fast_path", "true" if dicom_fast_path else "false")
        process = ListenerProcess(tmp_path / "var", database_url, **settings)
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


def test_killed_listener_resumes_study_and_completes_it_when_the_rest_arrives(
    head_ct: PhantomStudy,
    listener_process: Callable[..., ListenerProcess],
    storescu: Callable[..., Any],
    poll: Callable[..., Any],
) -> None:
    began = datetime.now(UTC)
    listener = listener_process(stable_seconds="300")
    listener.start(poll)
    assert storescu(listener.port, head_ct.files[:20], aet="CT_ROOM_1").ok
    listener.kill()

    listener.start(poll)
    assert storescu(listener.port, head_ct.files[20:], aet="CT_ROOM_1").ok

    poll(lambda: listener.state(head_ct.study_uid) == "queued", what="queued", timeout=30)
    assert len(listener.events("study_resumed", head_ct.study_uid)) == 1
    completions = listener.events("study_completed", head_ct.study_uid)
    assert len(completions) == 1 and "series whole" in completions[0]["reason"]
    assert listener.events("study_updated", head_ct.study_uid) == []
    assert len(listener.queued_messages()) == 1, "exactly one task on the queue"

    rows = json.loads(listener.cli("audit", "studies", "--format", "json"))
    assert len(rows) == 1
    row = rows[0]
    assert row["study_instance_uid"] == head_ct.study_uid
    assert row["state"] == "queued"
    assert row["calling_aet"] == "CT_ROOM_1"
    assert row["series_count"] == 1
    assert row["instance_count"] == 40
    assert row["completion_basis"] == "announced_count"  # resumed, then whole by its count
    first, last, completed = (
        datetime.fromisoformat(row[key])
        for key in ("first_received_at", "last_received_at", "completed_at")
    )
    assert began <= first < last <= completed <= datetime.now(UTC)
    newest = listener.query("SELECT max(received_at) FROM instances")[0][0]
    if not isinstance(newest, datetime):
        newest = datetime.fromisoformat(str(newest))
    assert last.astimezone(UTC).replace(tzinfo=None) == (
        newest.astimezone(UTC) if newest.tzinfo else newest
    ).replace(tzinfo=None)


def test_killed_listener_completes_resumed_study_by_idle_timer(
    head_ct: PhantomStudy,
    listener_process: Callable[..., ListenerProcess],
    storescu: Callable[..., Any],
    poll: Callable[..., Any],
) -> None:
    listener = listener_process(stable_seconds="300")
    listener.start(poll)
    assert storescu(listener.port, head_ct.files[:20]).ok
    listener.kill()
    assert listener.state(head_ct.study_uid) == "receiving"

    listener.start(poll, stable_seconds="1.5")

    poll(lambda: listener.state(head_ct.study_uid) == "queued", what="queued", timeout=30)
    assert len(listener.events("study_resumed", head_ct.study_uid)) == 1
    completions = listener.events("study_completed", head_ct.study_uid)
    assert len(completions) == 1 and "idle" in completions[0]["reason"]
    count = listener.query("SELECT count(*) FROM instances")[0][0]
    assert count == 20
    assert len(listener.queued_messages()) == 1


def test_listener_log_never_holds_patient_names(
    phantoms: Callable[..., PhantomStudy],
    listener_process: Callable[..., ListenerProcess],
    storescu: Callable[..., Any],
    poll: Callable[..., Any],
) -> None:
    import pydicom

    study = phantoms("phi12", slices=12, size=64, seed=4242)
    name = str(pydicom.dcmread(study.files[0], stop_before_pixels=True).PatientName)
    patient_id = str(pydicom.dcmread(study.files[0], stop_before_pixels=True).PatientID)
    listener = listener_process(stable_seconds="300")
    listener.start(poll)
    assert storescu(listener.port, study.files, aet="CT_ROOM_1").ok
    poll(lambda: listener.state(study.study_uid) == "queued", what="queued", timeout=30)
    listener.stop()

    log = listener.log()
    assert study.study_uid in log  # the log does name the study, by its UID
    assert name not in log and "PHANTOM" not in log
    assert patient_id not in log
