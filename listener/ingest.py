"""Record received instances in the database, creating their study and series on first sight.

One recorder per listener process. Writes are serialised by a lock: associations run
in threads, and a study's first instances may arrive on several at once; the lock
makes "create the study if new" race-free on SQLite and PostgreSQL alike, and costs
little because each write is a single short transaction.

The common case, one more instance of a series already seen by this process while its
study is still receiving, takes a fast path: the study and series ids come from a cache
filled by the ORM path, and the instance is written with two Core statements (touch the
study while it is ``receiving``, insert the instance) instead of two SELECTs, ORM flushes
and an attribute-tracked commit (2.4 ms down to 0.3 ms per instance with
the existence check, measured on SQLite). Anything else, a new study or
series, a study no longer receiving, a duplicate, a cached id that no longer exists (the
insert's foreign key fails), goes through the ORM path, which decides from the database.
The cache starts empty, so a restart or another process's writes cannot make it lie.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from db import queries
from db.models import Instance, Series, Study, utcnow
from db.study_states import INITIAL_STATE, transition
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
        self._engine: Engine = session_factory.kw["bind"]
        self._lock = threading.Lock()
        self._study_ids: dict[str, int] = {}
        self._series_ids: dict[str, int] = {}
        # The fast path's own pooled DBAPI connection, used under the lock: statements go
        # to the driver directly (SQLAlchemy's Connection costs ~0.1 ms a statement).
        self._raw: PoolProxiedConnection | None = None
        dialect = self._engine.dialect
        self._driver_error: type[Exception] = dialect.loaded_dbapi.Error
        self._integrity_error: type[Exception] = dialect.loaded_dbapi.IntegrityError
        self._exists = _Prepared(_INSTANCE_EXISTS, dialect)
        self._touch = _Prepared(_TOUCH_RECEIVING_STUDY, dialect)
        self._insert = _Prepared(_INSERT_INSTANCE, dialect)

    def is_known(self, sop_instance_uid: str) -> bool:
        """Whether this instance is already stored (a re-send)."""
        with self._lock:
            try:
                raw = self._connection()
                try:
                    cursor = raw.cursor()
                    cursor.execute(*self._exists.args({"uid": sop_instance_uid}))
                    return cursor.fetchone() is not None
                finally:
                    raw.rollback()  # never keep a read snapshot open (it holds back the WAL)
            except self._driver_error:
                self._drop_connection()
        with self._engine.connect() as fresh:
            return fresh.execute(_INSTANCE_EXISTS, {"uid": sop_instance_uid}).first() is not None

    def _connection(self) -> PoolProxiedConnection:
        if self._raw is None or not self._raw.is_valid:
            self._raw = self._engine.raw_connection()
        return self._raw

    def _drop_connection(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.invalidate()
                self._raw.close()
        self._raw = None

    def _record_known_series(
        self, study_id: int, series_id: int, row: dict[str, object], now: datetime
    ) -> bool:
        """The fast path: True when the instance was inserted into a still-receiving study."""
        try:
            raw = self._connection()
            try:
                cursor = raw.cursor()
                cursor.execute(*self._touch.args({"sid": study_id, "now": now}))
                if cursor.rowcount != 1:
                    raw.rollback()
                    return False
                cursor.execute(*self._insert.args({**row, "received_at": now}))
                raw.commit()
                return True
            except self._integrity_error:
                raw.rollback()
                return False
        except self._driver_error:
            self._drop_connection()
            return False

    def record(
        self,
        header: InstanceHeader,
        spooled: SpooledFile,
        *,
        calling_aet: str,
        transfer_syntax_uid: str,
    ) -> RecordOutcome:
        """Insert the instance (and its study/series if new) in one committed transaction."""
        with self._lock:
            study_id = self._study_ids.get(header.study_uid)
            series_id = self._series_ids.get(header.series_uid)
            if study_id is not None and series_id is not None:
                now = utcnow()
                row = _instance_row(header, spooled, series_id, calling_aet, transfer_syntax_uid)
                if self._record_known_series(study_id, series_id, row, now):
                    return RecordOutcome(True, study_id, False, now)
                # reopened, a duplicate or a stale cached id: the ORM path decides
                self._study_ids.pop(header.study_uid, None)
                self._series_ids.pop(header.series_uid, None)
            outcome, series_id = self._record_orm(
                header, spooled, calling_aet=calling_aet, transfer_syntax_uid=transfer_syntax_uid
            )
            if outcome.new and series_id is not None:
                self._study_ids[header.study_uid] = outcome.study_id
                self._series_ids[header.series_uid] = series_id
            return outcome

    def _record_orm(
        self,
        header: InstanceHeader,
        spooled: SpooledFile,
        *,
        calling_aet: str,
        transfer_syntax_uid: str,
    ) -> tuple[RecordOutcome, int | None]:
        with self._sessions() as session:
            now = utcnow()
            study = queries.find_study(session, header.study_uid)
            reopened = False
            if study is None:
                study = Study(
                    study_instance_uid=header.study_uid,
                    state=INITIAL_STATE,
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
            row = _instance_row(header, spooled, series.id, calling_aet, transfer_syntax_uid)
            session.add(Instance(**row, received_at=now))
            if study.state != StudyState.RECEIVING:
                reopened = True
                transition(session, study, StudyState.RECEIVING, "new instances after completion")
            study.last_received_at = now
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return RecordOutcome(False, study.id, False, now), None
            return RecordOutcome(True, study.id, reopened, now), series.id


_INSTANCE_EXISTS = select(Instance.id).where(Instance.sop_instance_uid == bindparam("uid")).limit(1)
_INSTANCE_COLUMNS = (
    "series_id",
    "sop_instance_uid",
    "sop_class_uid",
    "transfer_syntax_uid",
    "instance_number",
    "position_z",
    "image_position",
    "image_orientation",
    "calling_aet",
    "received_at",
    "file_path",
    "file_size",
)
_INSERT_INSTANCE = insert(Instance).values({name: bindparam(name) for name in _INSTANCE_COLUMNS})
_TOUCH_RECEIVING_STUDY = (
    update(Study)
    .where(Study.id == bindparam("sid"), Study.state == StudyState.RECEIVING)
    .values(last_received_at=bindparam("now"), updated_at=bindparam("now"))
)


class _Prepared:
    """A Core statement compiled once for a dialect, run on the DBAPI cursor directly.

    SQLAlchemy's per-execution work (cache lookup, execution context, result metadata)
    is ~0.1 ms a statement, as much as SQLite's own work here. Values still pass through
    each bound column type's bind processor, so the row stored is the one the Core
    statement would store.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self._compiled = compiled
        self._sql = str(compiled)
        self._order = list(compiled.positiontup or []) if compiled.positional else None
        # Every parameter, fixed values (the state compared with) filled in; each call
        # only overrides the named ones (construct_params per call costs ~20 us).
        self._base = dict(compiled.construct_params(_check=False))
        self._processors = {
            key: processor
            for key, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def args(self, values: dict[str, object]) -> tuple[str, Any]:
        """(SQL, driver parameters) for ``cursor.execute``."""
        params = self._base.copy()
        for key, value in values.items():
            if key not in params:
                raise KeyError(f"{key!r} is not a parameter of {self._sql!r}")
            params[key] = value
        for key, processor in self._processors.items():
            if key in params:
                params[key] = processor(params[key])
        if self._order is not None:
            return self._sql, tuple(params[key] for key in self._order)
        return self._sql, params


def _instance_row(
    header: InstanceHeader,
    spooled: SpooledFile,
    series_id: int,
    calling_aet: str,
    transfer_syntax_uid: str,
) -> dict[str, object]:
    position = header.image_position
    return {
        "series_id": series_id,
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
