"""Assemble instances into studies and fire completion once per study version.

Each stored instance is noted here; a ticker thread asks the pure policy in
``listener.completion`` whether each open study is complete. Completion bumps the
study's version (so later arrivals reopen it and a new version is predicted, never lost),
applies the routing rule, and hands routed studies to the dispatch seam. After a restart,
studies still ``receiving`` are rebuilt from the database, their timers continuing from
the stored last-arrival time (with the series' kind from the SOP class and geometry kept
per instance; Image Type, kernel and thickness are not stored, so a rebuilt series falls
back to "evenly spaced" and may wait the idle timer).

Each instance names the association that carried it; while one of a study's associations
is open, only the idle timer may complete it (see ``sender_connected`` in
:func:`listener.completion.decide`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.audit import record_event
from db.models import Study, utcnow
from db.study_states import transition
from db.vocabulary import AuditEventType, StudyState
from listener.completion import Decision, SeriesProgress, SeriesTraits, decide
from listener.header import InstanceHeader
from listener.routing import RoutingRule, SeriesFacts
from triage.queue import Dispatcher
from triage.series_kind import parse_orientation

log = logging.getLogger(__name__)
ACTOR = "listener"


@dataclass
class OpenStudy:
    """In-memory progress of a study that is still receiving."""

    study_id: int
    study_uid: str
    last_received: float  # time.monotonic() of the newest instance
    series: dict[str, SeriesProgress] = field(default_factory=dict)
    associations: set[int] = field(default_factory=set)
    """Open associations that carried instances of it (ids from ``note_instance``)."""
    held_for_space: bool = False
    """An instance of it was refused for lack of spool space: not complete, whatever the
    timers say, until one of its instances is stored again (the sender re-sends)."""


@dataclass(frozen=True)
class CompletionPolicy:
    """The timer settings the policy is evaluated with."""

    stable_seconds: float
    quiet_seconds: float
    site_expected: int = 0


def traits_of(header: InstanceHeader) -> SeriesTraits:
    """What one instance says about its series' kind, for :func:`listener.completion.role_of`."""
    return SeriesTraits(
        sop_class_uid=header.sop_class_uid,
        is_image=header.rows is not None and header.columns is not None,
        image_type=header.image_type,
        orientation=header.image_orientation,
        has_position=header.image_position is not None,
        kernel=header.convolution_kernel,
    )


class StudyAssembler:
    """Tracks open studies and completes them; thread-safe."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        policy: CompletionPolicy,
        rule: RoutingRule,
        dispatch: Dispatcher,
        *,
        tick_seconds: float = 0.2,
    ) -> None:
        self._sessions = session_factory
        self._policy = policy
        self._rule = rule
        self._dispatch = dispatch
        self._tick = tick_seconds
        self._open: dict[str, OpenStudy] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- arrivals -----------------------------------------------------------------------
    def note_instance(
        self,
        *,
        study_id: int,
        study_uid: str,
        series_uid: str,
        instance_number: int | None,
        position: float | None,
        expected: int | None,
        thickness: float | None = None,
        traits: SeriesTraits | None = None,
        association: int | None = None,
    ) -> None:
        """Record that an instance of this study was stored just now (resets its timer).

        ``traits`` (of the series' first instance) say whether the series decides
        completion; ``association`` identifies the association that carried it, which
        holds the early rules until :meth:`association_ended` is called with it.
        """
        with self._lock:
            study = self._open.get(study_uid)
            if study is None:
                study = OpenStudy(study_id, study_uid, time.monotonic())
                self._open[study_uid] = study
            progress = study.series.setdefault(
                series_uid, SeriesProgress(expected=expected, traits=traits)
            )
            if expected and not progress.expected:
                progress.expected = expected
            progress.add(instance_number, position, thickness)
            if association is not None:
                study.associations.add(association)
            study.last_received = time.monotonic()
            if study.held_for_space:
                study.held_for_space = False
                log.info(
                    "study stored again after a full spool: hold released",
                    extra={"study_uid": study_uid},
                )

    def association_ended(self, association: int) -> None:
        """An association was released, aborted or closed: its studies may complete early."""
        with self._lock:
            for study in self._open.values():
                study.associations.discard(association)

    def hold_for_space(self, study_uid: str) -> None:
        """An instance of ``study_uid`` was refused for lack of space: keep the study open.

        Without this a spool full for longer than the idle timer completed the study with
        the instances that fitted (15 of 40) and queued it as if whole. The hold ends when
        an instance of the study is stored again, i.e. when space has returned and the
        sender re-sends; the usual rules then decide completion.
        """
        with self._lock:
            study = self._open.get(study_uid)
            if study is None or study.held_for_space:
                return  # its first instance was refused (nothing to complete), or held already
            study.held_for_space = True
            study_id = study.study_id
        log.warning(
            "spool full: study held open until its instances are stored again",
            extra={"study_uid": study_uid},
        )
        try:
            with self._sessions() as session:
                record_event(
                    session,
                    AuditEventType.STUDY_HELD,
                    actor=ACTOR,
                    study_instance_uid=study_uid,
                    detail={
                        "reason": "instances refused for lack of spool space",
                        "study_id": study_id,
                    },
                )
                session.commit()
        except Exception:
            log.exception("could not audit a held study", extra={"study_uid": study_uid})

    def open_studies(self) -> list[str]:
        """UIDs of studies still waiting for completion."""
        with self._lock:
            return list(self._open)

    # -- restart ------------------------------------------------------------------------
    def resume(self) -> int:
        """Rebuild open studies from the database after a restart; returns how many."""
        now_wall = utcnow()
        now_mono = time.monotonic()
        resumed = 0
        with self._sessions() as session:
            for study in queries.studies_in_states(session, [StudyState.RECEIVING]):
                age = (now_wall - study.last_received_at).total_seconds()
                open_study = OpenStudy(study.id, study.study_instance_uid, now_mono - max(age, 0))
                for series, instance in queries.series_instances(session, study.id):
                    traits = SeriesTraits(
                        sop_class_uid=instance.sop_class_uid,
                        orientation=parse_orientation(instance.image_orientation),
                        has_position=instance.image_position is not None,
                    )
                    progress = open_study.series.setdefault(
                        series.series_instance_uid,
                        SeriesProgress(expected=series.expected_instances, traits=traits),
                    )
                    progress.add(instance.instance_number, instance.position_z)
                with self._lock:
                    self._open.setdefault(study.study_instance_uid, open_study)
                record_event(
                    session,
                    AuditEventType.STUDY_RESUMED,
                    actor=ACTOR,
                    study_instance_uid=study.study_instance_uid,
                    detail={"instances": sum(p.count for p in open_study.series.values())},
                )
                resumed += 1
            session.commit()
        if resumed:
            log.info("resumed %d incomplete studies from the database", resumed)
        return resumed

    # -- the ticker ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread that completes studies."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="study-completion", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the ticker (open studies stay ``receiving`` in the database for resume)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self.check_now()
            except Exception:
                log.exception("completion check failed; will retry")

    def check_now(self) -> list[str]:
        """Complete every study whose policy says so; returns the completed UIDs."""
        now = time.monotonic()
        due: list[tuple[OpenStudy, Decision]] = []
        with self._lock:
            for uid, study in list(self._open.items()):
                if study.held_for_space:
                    continue
                decision = decide(
                    now=now,
                    last_received=study.last_received,
                    series=list(study.series.values()),
                    stable_seconds=self._policy.stable_seconds,
                    quiet_seconds=self._policy.quiet_seconds,
                    site_expected=self._policy.site_expected,
                    sender_connected=bool(study.associations),
                )
                if decision.complete:
                    due.append((study, decision))
                    del self._open[uid]
        for study, decision in due:
            try:
                self._complete(study, decision)
            except Exception:
                log.exception(
                    "could not complete study; will retry", extra={"study_uid": study.study_uid}
                )
                with self._lock:
                    self._open.setdefault(study.study_uid, study)
        return [study.study_uid for study, _ in due]

    def _complete(self, open_study: OpenStudy, decision: Decision) -> None:
        reason = decision.reason
        with self._sessions() as session:
            study = session.get(Study, open_study.study_id)
            if study is None or study.state != StudyState.RECEIVING:
                return
            study.version += 1
            study.completed_at = utcnow()
            transition(session, study, StudyState.COMPLETE, reason)
            updated = study.version > 1
            record_event(
                session,
                AuditEventType.STUDY_UPDATED if updated else AuditEventType.STUDY_COMPLETED,
                actor=ACTOR,
                study_instance_uid=study.study_instance_uid,
                detail={"version": study.version, "reason": reason, "basis": decision.basis},
            )
            facts = [
                SeriesFacts(s.modality, s.body_part, s.series_description, study.study_description)
                for s in study.series
            ]
            routed, why = self._rule.decide(facts)
            if not routed:
                transition(session, study, StudyState.IGNORED, why)
                record_event(
                    session,
                    AuditEventType.STUDY_IGNORED,
                    actor=ACTOR,
                    study_instance_uid=study.study_instance_uid,
                    detail={"reason": why},
                )
            session.commit()
            log.info(
                "study %s (version %d): %s",
                "updated" if updated else "complete",
                study.version,
                reason,
                extra={"study_uid": study.study_instance_uid},
            )
            if not routed:
                return
            try:
                task_id = self._dispatch(study.id, study.study_instance_uid, study.version)
            except Exception as exc:  # broker down: the reconciler re-queues from the database
                log.warning(
                    "could not queue study (%s); it stays complete for the reconciler",
                    type(exc).__name__,
                    extra={"study_uid": study.study_instance_uid},
                )
                return
            queries.mark_queued_if_complete(session, study.id, study.version)
            record_event(
                session,
                AuditEventType.STUDY_QUEUED,
                actor=ACTOR,
                study_instance_uid=study.study_instance_uid,
                detail={"version": study.version, "task_id": task_id},
            )
            session.commit()
