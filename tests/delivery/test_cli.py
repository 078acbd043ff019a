"""``triage audit deliveries`` lists every delivery; ``triage deliveries retry`` revives dead ones."""

from __future__ import annotations

import json
from collections.abc import Callable

from click.testing import CliRunner
from sqlalchemy import select

from db.models import AuditEvent
from db.vocabulary import AuditEventType
from tests.delivery.conftest import Outbox
from tests.delivery.peers import PynetdicomScp, free_port
from triage.cli import main


def _env(box: Outbox) -> dict[str, str]:
    return {
        "TRIAGE_VAR_DIR": str(box.settings.var_dir),
        "TRIAGE_DATABASE_URL": box.settings.database.url.get_secret_value(),
    }


def test_audit_lists_state_attempts_error_and_next_attempt(
    make_outbox: Callable[..., Outbox],
) -> None:
    scp = PynetdicomScp(store_status=0xC001)
    scp.start()
    try:
        box = make_outbox()
        dead, waiting = box.queue(("dicom", scp.destination), ("hl7", f"127.0.0.1:{free_port()}"))
        box.runner().run_due()
    finally:
        scp.stop()
    result = CliRunner(env=_env(box)).invoke(main, ["audit", "deliveries", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.output)}
    assert rows[dead]["state"] == "dead" and "0xC001" in rows[dead]["last_error"]
    assert rows[dead]["next_attempt_at"] is None
    assert rows[waiting]["state"] == "retrying" and rows[waiting]["attempts"] == 1
    assert rows[waiting]["next_attempt_at"] and rows[waiting]["study_instance_uid"]
    table = CliRunner(env=_env(box)).invoke(main, ["audit", "deliveries"])
    assert "0xC001" in table.output and "retrying" in table.output
    with box.sessions() as session:
        viewed = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == AuditEventType.RESULT_VIEWED)
        ).all()
    assert [e.detail["command"] for e in viewed] == ["audit deliveries"] * 2

    retried = CliRunner(env=_env(box)).invoke(main, ["deliveries", "retry", str(dead)])
    assert retried.exit_code == 0, retried.output
    assert f"re-queued 1 deliveries: {dead}" in retried.output
    again = CliRunner(env=_env(box)).invoke(main, ["deliveries", "retry", str(waiting)])
    assert again.exit_code == 1 and "not dead" in again.output
    state = {row.id: (row.state.value, row.attempts) for row in box.rows()}
    assert state[dead] == ("retrying", 0)


def test_retry_needs_ids_or_dead(make_outbox: Callable[..., Outbox]) -> None:
    box = make_outbox()
    result = CliRunner(env=_env(box)).invoke(main, ["deliveries", "retry"])
    assert result.exit_code == 2 and "--dead" in result.output
