"""``triage users add|list|revoke`` and the auditors' ``triage audit`` queries, run as an
operator runs them (the real command over a real database)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from db.engine import make_engine, make_session_factory
from db.models import AuditEvent, WebUser
from db.users import principal_for_token
from db.vocabulary import AuditEventType, Priority, WebRole
from tests.web.seed import CLASSES, add_study
from triage.cli import main


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path / "var"))
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    run.sessions = sessions  # type: ignore[attr-defined]
    yield run
    engine.dispose()


def test_users_add_prints_the_token_last_and_stores_only_its_hash(cli) -> None:  # type: ignore[no-untyped-def]
    out = cli("users", "add", "dr-house", "--role", "radiologist")
    token = out.strip().splitlines()[-1]
    assert len(token) >= 43
    with cli.sessions() as session:
        principal = principal_for_token(session, token)
        assert principal is not None and principal.role == WebRole.RADIOLOGIST
        stored = session.query(WebUser.token_sha256).scalar()
    assert token not in stored and len(stored) == 64
    listed = json.loads(cli("users", "list", "--format", "json"))
    assert listed[0]["name"] == "dr-house" and listed[0]["revoked_at"] is None
    assert token not in json.dumps(listed)
    assert "revoked dr-house" in cli("users", "revoke", "dr-house")
    with cli.sessions() as session:
        assert principal_for_token(session, token) is None
    result = CliRunner().invoke(main, ["users", "revoke", "dr-house"])
    assert result.exit_code != 0


def test_audit_queries_print_table_json_and_csv_and_are_audited(cli) -> None:  # type: ignore[no-untyped-def]
    probs = {**dict.fromkeys(CLASSES, 0.05), "any": 0.8}
    with cli.sessions() as session:
        study = add_study(session, priority=Priority.CRITICAL, probabilities=probs)
        add_study(session, priority=Priority.ROUTINE, calling_aet="CT9")
        session.commit()
    rows = json.loads(cli("audit", "findings", "--finding", "any", "--min-probability", "0.5",
                          "--format", "json"))  # fmt: skip
    assert [r["study_instance_uid"] for r in rows] == [study.study_instance_uid]
    table = cli("audit", "findings", "--format", "table")
    assert study.study_instance_uid in table and "probability" in table.splitlines()[0]
    parsed = list(csv.DictReader(io.StringIO(cli("audit", "positive-rate", "--format", "csv"))))
    assert {r["calling_aet"] for r in parsed} == {"CT1", "CT9"}
    for query in ("undelivered", "not-assessed", "latency", "shadow-agreement"):
        for fmt in ("table", "json", "csv"):
            cli("audit", query, "--format", fmt, "--since", "2020-01-01")
    with cli.sessions() as session:
        runs = (
            session.query(AuditEvent)
            .filter(AuditEvent.event_type == AuditEventType.AUDIT_QUERY_RUN)
            .count()
        )
    assert runs == 3 + 12


def test_triage_web_serves_until_terminated(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRIAGE_DATABASE_URL": database_url, "TRIAGE_VAR_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "triage.cli", "web", "--port", "0"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = None
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        assert port, "triage web never said where it listens"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/api/studies").status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=20)
    # uvicorn shuts down cleanly, then re-raises the signal so the exit says why.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in rest
