"""Start-up recovery: a crash's leftovers in the spool are cleaned up or recorded, never lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import Instance
from db.vocabulary import AuditEventType
from listener.service import start_listener
from training.phantom import PhantomStudy


def test_spooled_instances_without_rows_are_recorded_and_temporaries_removed(
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    storescu: Callable[..., Any],
    dispatcher: Any,
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    study = phantoms("recover12", slices=12, size=64, seed=9)
    settings = make_settings(database_url=database_url, stable_seconds=300, quiet_seconds=0.2)
    service = start_listener(settings, dispatcher=dispatcher, port=0)
    try:
        assert storescu(service.port, study.files).ok
        poll(lambda: dispatcher.versions(study.study_uid) == [1], what="version 1")
    finally:
        service.stop()

    # what a crash leaves: three committed files whose rows were lost, one half-received file
    lost = sorted(i.sop_instance_uid for i in recorded.instances(study.study_uid))[:3]
    with Session(recorded.engine) as session:
        session.execute(delete(Instance).where(Instance.sop_instance_uid.in_(lost)))
        session.commit()
    leftover = settings.spool.dir / ".incoming" / "crashed.tmp"
    leftover.write_bytes(b"half an instance")

    service = start_listener(settings, dispatcher=dispatcher, port=0)
    try:
        poll(lambda: dispatcher.versions(study.study_uid) == [1, 2], what="version 2")
    finally:
        service.stop()

    assert not leftover.exists()
    instances = recorded.instances(study.study_uid)
    assert len(instances) == 12
    by_uid = {i.sop_instance_uid: i for i in instances}
    assert all(by_uid[uid].calling_aet == "(recovered)" for uid in lost)
    events = recorded.events(AuditEventType.INSTANCE_RECOVERED, study.study_uid)
    assert sorted(e.detail["sop_instance_uid"] for e in events) == lost
    with Session(recorded.engine) as session:
        paths = session.scalars(
            select(Instance.file_path).where(Instance.sop_instance_uid.in_(lost))
        )
        assert all(p.endswith(".dcm") for p in paths)
