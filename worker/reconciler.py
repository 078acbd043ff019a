"""The database is the source of truth: re-queue studies the broker may have lost.

A Redis restart without persistence, a dispatch that failed while the broker was down, or
a worker killed after the broker gave up on its message all leave a study ``complete``,
``queued`` or ``processing`` with no result. Every ``reconcile_interval_seconds`` such
studies older than ``reconcile_after_seconds`` are sent again; the task is idempotent, so
a study that was merely slow costs one cheap duplicate delivery.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from db.audit import record_event
from db.results import studies_to_requeue
from db.study_states import transition
from db.vocabulary import AuditEventType, StudyState
from triage.queue import Dispatcher
from triage.settings import Settings

log = logging.getLogger(__name__)
ACTOR = "reconciler"


def reconcile_once(
    sessions: sessionmaker[Session], dispatch: Dispatcher, settings: Settings
) -> list[str]:
    """Re-queue every study that waited too long; returns their UIDs."""
    requeued: list[str] = []
    with sessions() as session:
        studies = studies_to_requeue(
            session,
            older_than=timedelta(seconds=settings.worker.reconcile_after_seconds),
            stuck_after=timedelta(seconds=settings.worker.task_time_limit + 60),
        )
        for study in studies:
            try:
                task_id = dispatch(study.id, study.study_instance_uid, study.version)
            except Exception as exc:
                log.warning("re-queue failed (%s); will retry", type(exc).__name__)
                break
            previous = study.state.value
            transition(session, study, StudyState.QUEUED, f"re-queued from {previous}")
            record_event(
                session,
                AuditEventType.STUDY_REQUEUED,
                actor=ACTOR,
                study_instance_uid=study.study_instance_uid,
                detail={"version": study.version, "was": previous, "task_id": task_id},
            )
            session.commit()
            requeued.append(study.study_instance_uid)
    if requeued:
        log.info("re-queued %d studies without a result", len(requeued))
    return requeued


class Reconciler:
    """Runs :func:`reconcile_once` on a timer in a daemon thread."""

    def __init__(
        self, sessions: sessionmaker[Session], dispatch: Dispatcher, settings: Settings
    ) -> None:
        self._sessions = sessions
        self._dispatch = dispatch
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._settings.worker.reconcile_interval_seconds):
            try:
                reconcile_once(self._sessions, self._dispatch, self._settings)
            except Exception:
                log.exception("reconciler pass failed; will retry")
