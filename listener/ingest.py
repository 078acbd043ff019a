"""Record received instances in the database, creating their study and series on first sight.

One recorder per listener process. Writes are serialised by a lock: associations run
in threads, and a study's first instances may arrive on several at once; the lock
makes "create the study if new" race-free on SQLite and PostgreSQL alike, and costs
little because each write is a single short transaction.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.models import Instance, Series, Study, utcnow
from db.vocabulary import StudyState
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
        self._sessions = session_factory
        self._lock = threading.Lock()

    def is_known(self, sop_instance_uid: str) -> bool:
        """Whether this instance is already stored (a re-send)."""
        with self._sessions() as session:
            return queries.instance_exists(session, sop_instance_uid)

    def record(
        self,
        header: InstanceHeader,
        spooled: SpooledFile,
        *,
        calling_aet: str,
        transfer_syntax_uid: str,
    ) -> RecordOutcome:
        """Insert the instance (and its study/series if new) in one committed transaction."""
        with self._lock, self._sessions() as session:
            now = utcnow()
            study = queries.find_study(session, header.study_uid)
            reopened = False
            if study is None:
                study = Study(
                    study_instance_uid=header.study_uid,
                    state=StudyState.RECEIVING,
                    calling_aet=calling_aet,
                    modality=header.modality,
                    study_description=header.study_description,
                    accession_number=header.accession_number,
                    patient_id=header.patient_id,
                    study_date=header.study_date,
                    first_received_at=now,
                    last_received_at=now,
                )
                session.add(study)
                session.flush()
            series = queries.find_series(session, header.series_uid)
            if series is None:
                series = Series(
                    study_id=study.id,
                    series_instance_uid=header.series_uid,
                    modality=header.modality,
                    body_part=header.body_part,
                    series_description=header.series_description,
                    series_number=header.series_number,
                    expected_instances=header.images_in_acquisition,
                )
                session.add(series)
                session.flush()
            position = header.image_position
            session.add(
                Instance(
                    series_id=series.id,
                    sop_instance_uid=header.sop_instance_uid,
                    sop_class_uid=header.sop_class_uid,
                    transfer_syntax_uid=transfer_syntax_uid,
                    instance_number=header.instance_number,
                    position_z=header.position_along_normal,
                    image_position="\\".join(f"{v:g}" for v in position) if position else None,
                    image_orientation=(
                        "\\".join(f"{v:g}" for v in header.image_orientation)
                        if header.image_orientation
                        else None
                    ),
                    calling_aet=calling_aet,
                    received_at=now,
                    file_path=str(spooled.path),
                    file_size=spooled.size,
                )
            )
            if study.state != StudyState.RECEIVING:
                reopened = True
                queries.set_study_state(
                    session, study, StudyState.RECEIVING, "new instances after completion"
                )
            study.last_received_at = now
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return RecordOutcome(False, study.id, False, now)
            return RecordOutcome(True, study.id, reopened, now)
