"""Recover what a crash left in the spool, before the listener serves again.

Two leftovers are possible. Temporary files in ``<spool>/.incoming`` belong to instances
that were still arriving: they were never answered Success, so the sender sends them again,
and they are deleted. Whole instance files without a database row come from a crash
between the rename and the commit, or from a power loss on a site that turned
``TRIAGE_SPOOL_FSYNC`` off (its SQLite commits are not flushed either): such an instance
may have been answered Success, so it is recorded now from the file's own header, and the
study it belongs to completes with it (as a new version if it had completed without it).

Only series folders changed within ``window`` are read, so a start-up stays quick on a
spool that holds months of studies.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.audit import record_event
from db.vocabulary import AuditEventType
from listener.header import MalformedDatasetError, parse_header
from listener.ingest import InstanceRecorder
from listener.spool import Spool, SpooledFile
from triage.uids import is_valid_uid

log = logging.getLogger(__name__)
RECOVERED_AET = "(recovered)"


@dataclass(frozen=True)
class RecoveryReport:
    """What a start-up found and did."""

    temporary_files_removed: int
    instances_recorded: int
    unreadable: int


def _recent_series_folders(spool: Spool, window: float) -> list[Path]:
    cutoff = time.time() - window
    folders = []
    for study in spool.root.iterdir():
        if not is_valid_uid(study.name) or not study.is_dir():
            continue
        for series in study.iterdir():
            if is_valid_uid(series.name) and series.is_dir() and series.stat().st_mtime >= cutoff:
                folders.append(series)
    return folders


def recover_spool(
    spool: Spool,
    recorder: InstanceRecorder,
    sessions: sessionmaker[Session],
    *,
    window_seconds: float,
) -> RecoveryReport:
    """Remove stale temporary files and record spooled instances that have no row."""
    removed = 0
    for leftover in spool.incoming_dir.glob("*.tmp"):
        leftover.unlink(missing_ok=True)
        removed += 1
    recorded = unreadable = 0
    for folder in _recent_series_folders(spool, window_seconds):
        with sessions() as session:
            known = queries.recorded_sop_uids(session, folder.name)
        for path in folder.glob("*.dcm"):
            if path.stem in known or not is_valid_uid(path.stem):
                continue
            data = path.read_bytes()
            try:
                header = parse_header(data)
                meta = dcmread(BytesIO(data), stop_before_pixels=True).file_meta
                syntax = str(meta.TransferSyntaxUID)
            except (MalformedDatasetError, AttributeError, OSError) as exc:
                log.error("spooled file %s cannot be recovered: %s", path.name, exc)
                unreadable += 1
                continue
            if spool.path_for(header.study_uid, header.series_uid, header.sop_instance_uid) != path:
                log.error("spooled file %s lies outside its own UIDs' folder", path.name)
                unreadable += 1
                continue
            outcome = recorder.record(
                header,
                SpooledFile(path, len(data)),
                calling_aet=RECOVERED_AET,
                transfer_syntax_uid=syntax,
            )
            if outcome.new:
                recorded += 1
                with sessions() as session:
                    record_event(
                        session,
                        AuditEventType.INSTANCE_RECOVERED,
                        actor="listener",
                        study_instance_uid=header.study_uid,
                        detail={"sop_instance_uid": header.sop_instance_uid},
                    )
                    session.commit()
    if removed or recorded or unreadable:
        log.warning(
            "spool recovery: %d temporary files removed, %d instances recorded, %d unreadable",
            removed,
            recorded,
            unreadable,
        )
    return RecoveryReport(removed, recorded, unreadable)
