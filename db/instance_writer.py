"""The listener's write path for received instances: every statement it runs lives here.

Two paths, chosen by the listener's ``InstanceRecorder``:

* :meth:`InstanceWriter.append_to_receiving`, the fast path for one more instance of a
  series already recorded while its study is still ``receiving``: two prepared Core
  statements (touch the study, insert the instance) run on the driver's cursor, one commit.
  This is the documented exception to "plain query functions over a Session": the ORM and
  even SQLAlchemy's ``Connection`` cost as much per instance as SQLite's own work (2.4 ms
  down to 0.3 ms per instance, measured on SQLite; see docs/ingest-performance.md).
* :meth:`InstanceWriter.record`, the ORM path for everything else (a new study or series,
  a study no longer receiving, a duplicate), which decides from the database and reopens a
  completed study through the state machine.

Not thread-safe: the recorder serialises calls under its own lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
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
from db.models import Instance, Series, Study
from db.study_states import INITIAL_STATE, transition
from db.vocabulary import StudyState

Values = Mapping[str, object]

INSTANCE_COLUMNS = (
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
_INSTANCE_EXISTS = select(Instance.id).where(Instance.sop_instance_uid == bindparam("uid")).limit(1)
_INSERT_INSTANCE = insert(Instance).values({name: bindparam(name) for name in INSTANCE_COLUMNS})
# Touching only a receiving study is what keeps the fast path out of the state machine:
# it never changes a state, and a study that moved on makes it fall back to the ORM path.
_TOUCH_RECEIVING_STUDY = (
    update(Study)
    .where(Study.id == bindparam("sid"), Study.state == StudyState.RECEIVING)
    .values(last_received_at=bindparam("now"), updated_at=bindparam("now"))
)


@dataclass(frozen=True)
class Recorded:
    """What :meth:`InstanceWriter.record` did, with the ids the fast path may cache."""

    new: bool
    study_id: int
    series_id: int | None  # None when the instance was a duplicate
    reopened: bool


class InstanceWriter:
    """Writes instance rows for one listener process, holding the fast path's connection."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory
        self._engine: Engine = session_factory.kw["bind"]
        # The fast path's own pooled DBAPI connection: statements go to the driver directly.
        self._raw: PoolProxiedConnection | None = None
        dialect = self._engine.dialect
        self._driver_error: type[Exception] = dialect.loaded_dbapi.Error
        self._integrity_error: type[Exception] = dialect.loaded_dbapi.IntegrityError
        self._exists = _Prepared(_INSTANCE_EXISTS, dialect)
        self._touch = _Prepared(_TOUCH_RECEIVING_STUDY, dialect)
        self._insert = _Prepared(_INSERT_INSTANCE, dialect)

    def is_known(self, sop_instance_uid: str) -> bool:
        """Whether an instance with this SOP Instance UID is already stored."""
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
        with self._sessions() as session:
            return queries.instance_exists(session, sop_instance_uid)

    def append_to_receiving(
        self, study_id: int, series_id: int, row: Values, now: datetime
    ) -> bool:
        """The fast path: True when the instance was inserted into a still-receiving study.

        False (nothing written) when the study is no longer receiving, the instance is a
        duplicate, a cached id no longer exists, or the driver failed: the caller then
        takes :meth:`record`, which decides from the database.
        """
        try:
            raw = self._connection()
            try:
                cursor = raw.cursor()
                cursor.execute(*self._touch.args({"sid": study_id, "now": now}))
                if cursor.rowcount != 1:
                    raw.rollback()
                    return False
                values = {**row, "series_id": series_id, "received_at": now}
                cursor.execute(*self._insert.args(values))
                raw.commit()
                return True
            except self._integrity_error:
                raw.rollback()
                return False
        except self._driver_error:
            self._drop_connection()
            return False

    def record(
        self, study_values: Values, series_values: Values, row: Values, now: datetime
    ) -> Recorded:
        """Insert the instance, creating its study and series if new, in one transaction.

        ``study_values`` and ``series_values`` are the columns used only when the study or
        series is new (their UIDs under ``study_instance_uid`` and ``series_instance_uid``);
        ``row`` is the instance's columns without ``series_id`` and ``received_at``. A study
        that is no longer receiving is reopened through the state machine.
        """
        with self._sessions() as session:
            study_uid = cast(str, study_values["study_instance_uid"])
            study = queries.find_study(session, study_uid)
            if study is None:
                study = Study(
                    **study_values,
                    state=INITIAL_STATE,
                    first_received_at=now,
                    last_received_at=now,
                )
                session.add(study)
                session.flush()
            series = queries.find_series(session, cast(str, series_values["series_instance_uid"]))
            if series is None:
                series = Series(**series_values, study_id=study.id)
                session.add(series)
                session.flush()
            session.add(Instance(**row, series_id=series.id, received_at=now))
            reopened = study.state != StudyState.RECEIVING
            if reopened:
                transition(session, study, StudyState.RECEIVING, "new instances after completion")
            study.last_received_at = now
            study_id, series_id = study.id, series.id
            try:
                session.commit()
            except IntegrityError:  # a duplicate: nothing of this transaction is kept
                session.rollback()
                return Recorded(False, study_id, None, False)
            return Recorded(True, study_id, series_id, reopened)

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


class _Prepared:
    """A Core statement compiled once for a dialect, run on the DBAPI cursor directly.

    SQLAlchemy's per-execution work (cache lookup, execution context, result metadata)
    is ~0.1 ms a statement, as much as SQLite's own work here. Values still pass through
    each bound column type's bind processor, so the row stored is the one the Core
    statement would store.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
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

    def args(self, values: Values) -> tuple[str, Any]:
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
