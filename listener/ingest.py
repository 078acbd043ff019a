"""Record received instances in the database, creating their study and series on first sight.

One recorder per listener process. Writes are serialised by a lock: associations run
in threads, and a study's first instances may arrive on several at once; the lock
makes "create the study if new" race-free on SQLite and PostgreSQL alike, and costs
little because each write is a single short transaction.

The common case, one more instance of a series already seen by this process while its
study is still receiving, takes a fast path: the study and series ids come from a cache
filled by the full path, and ``db.instance_writer`` writes the instance with two prepared
statements instead of two SELECTs, ORM flushes and an attribute-tracked commit. Anything
else, a new study or series, a study no longer receiving, a duplicate, a cached id that no
longer exists, goes through the full path, which decides from the database. The cache
starts empty, so a restart or another process's writes cannot make it lie.

This module turns a DICOM header into column values and keeps the cache; every statement
lives in ``db.instance_writer``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from db.instance_writer import InstanceWriter
from db.models import utcnow
from listener.header import InstanceHeader
from listener.spool import SpooledFile


@dataclass(frozen=True)
class RecordOutcome:
    """What recording an instance did: whether it was new, and whether it reopened a study."""

    new: bool
    study_id: int
    reopened: bool
    received_at: datetime


class InstanceRecorder:
    """Writes instance rows; remembers which SOP Instance UIDs are already stored."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._writer = InstanceWriter(session_factory)
        self._lock = threading.Lock()
        self._study_ids: dict[str, int] = {}
        self._series_ids: dict[str, int] = {}

    def is_known(self, sop_instance_uid: str) -> bool:
        """Whether this instance is already stored (a re-send)."""
        with self._lock:
            return self._writer.is_known(sop_instance_uid)

    def record(
        self,
        header: InstanceHeader,
        spooled: SpooledFile,
        *,
        calling_aet: str,
        transfer_syntax_uid: str,
    ) -> RecordOutcome:
        """Insert the instance (and its study/series if new) in one committed transaction."""
        row = _instance_row(header, spooled, calling_aet, transfer_syntax_uid)
        with self._lock:
            now = utcnow()
            study_id = self._study_ids.get(header.study_uid)
            series_id = self._series_ids.get(header.series_uid)
            if study_id is not None and series_id is not None:
                if self._writer.append_to_receiving(study_id, series_id, row, now):
                    return RecordOutcome(True, study_id, False, now)
                # reopened, a duplicate or a stale cached id: the full path decides
                self._study_ids.pop(header.study_uid, None)
                self._series_ids.pop(header.series_uid, None)
            recorded = self._writer.record(
                _study_values(header, calling_aet), _series_values(header), row, now
            )
            if recorded.new and recorded.series_id is not None:
                self._study_ids[header.study_uid] = recorded.study_id
                self._series_ids[header.series_uid] = recorded.series_id
            return RecordOutcome(recorded.new, recorded.study_id, recorded.reopened, now)


def _study_values(header: InstanceHeader, calling_aet: str) -> dict[str, object]:
    return {
        "study_instance_uid": header.study_uid,
        "calling_aet": calling_aet,
        "modality": header.modality,
        "study_description": header.study_description,
        "accession_number": header.accession_number,
        "patient_id": header.patient_id,
        "study_date": header.study_date,
    }


def _series_values(header: InstanceHeader) -> dict[str, object]:
    return {
        "series_instance_uid": header.series_uid,
        "modality": header.modality,
        "body_part": header.body_part,
        "series_description": header.series_description,
        "series_number": header.series_number,
        "expected_instances": header.images_in_acquisition,
    }


def _instance_row(
    header: InstanceHeader,
    spooled: SpooledFile,
    calling_aet: str,
    transfer_syntax_uid: str,
) -> dict[str, object]:
    position = header.image_position
    return {
        "sop_instance_uid": header.sop_instance_uid,
        "sop_class_uid": header.sop_class_uid,
        "transfer_syntax_uid": transfer_syntax_uid,
        "instance_number": header.instance_number,
        "position_z": header.position_along_normal,
        "image_position": "\\".join(f"{v:g}" for v in position) if position else None,
        "image_orientation": (
            "\\".join(f"{v:g}" for v in header.image_orientation)
            if header.image_orientation
            else None
        ),
        "calling_aet": calling_aet,
        "file_path": str(spooled.path),
        "file_size": spooled.size,
    }
