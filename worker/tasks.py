"""The study task: complete study -> series selection -> both model stages -> stored prediction.

Exactly once, nothing lost:

* the message is acknowledged late and rejected back to the queue if the worker dies
  (settings in ``triage.queue``), so a SIGKILL mid-inference means a redelivery;
* each delivery counts an attempt on the job row; past ``max_attempts`` the study is
  ``failed`` with the reason, so a poison study never loops forever;
* the prediction is inserted under a unique (study, version, bundle sha256) key, so a
  redelivered or duplicated task never stores a second one;
* transient database errors retry with backoff; an undecodable study fails at once.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from db import queries
from db.audit import record_event
from db.models import Instance, Job, Prediction, Series, Study, utcnow
from db.results import claim_job, store_prediction
from db.vocabulary import AuditEventType, JobState, StudyState
from triage.queue import PROCESS_STUDY_TASK
from worker.priority import triage
from worker.runtime import WorkerRuntime, get_runtime
from worker.series_selection import SeriesCandidate, SliceFacts, parse_orientation, select_series
from worker.study_inference import StudyResult, infer_series
from worker.volume_loader import StudyDataError, read_series

log = logging.getLogger(__name__)
ACTOR = "worker"


def _candidates(session: Any, study: Study) -> tuple[list[SeriesCandidate], dict[str, list[Path]]]:
    rows = session.execute(
        select(Series, Instance)
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study.id)
    ).all()
    slices: dict[str, list[SliceFacts]] = {}
    paths: dict[str, list[Path]] = {}
    meta: dict[str, Series] = {}
    for series, instance in rows:
        uid = series.series_instance_uid
        meta[uid] = series
        slices.setdefault(uid, []).append(
            SliceFacts(
                instance.sop_class_uid,
                parse_orientation(instance.image_orientation),
                instance.position_z,
            )
        )
        paths.setdefault(uid, []).append(Path(instance.file_path))
    candidates = [
        SeriesCandidate(uid, meta[uid].modality, meta[uid].series_description, facts)
        for uid, facts in slices.items()
    ]
    return candidates, paths


def _fail(
    runtime: WorkerRuntime, study_id: int, version: int, job_id: int | None, reason: str
) -> None:
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        if study is None:
            return
        if study.version == version:
            queries.set_study_state(session, study, StudyState.FAILED, reason[:2000])
        if job_id is not None:
            job = session.get(Job, job_id)
            if job is not None:
                job.state = JobState.FAILED
                job.reason = reason[:2000]
                job.finished_at = utcnow()
        record_event(
            session,
            AuditEventType.INFERENCE_FAILED,
            actor=ACTOR,
            study_instance_uid=study.study_instance_uid,
            detail={"version": version, "reason": reason[:500]},
        )
        session.commit()
    log.error("study failed: %s", reason)


def _store(
    runtime: WorkerRuntime,
    *,
    study_id: int,
    version: int,
    job_id: int,
    bundle: Any,
    shadow: bool,
    series_uid: str,
    result: StudyResult,
    timings: dict[str, Any],
) -> bool:
    verdict = triage(
        result.study_probabilities, bundle.thresholds, runtime.settings.models.thresholds
    )
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        assert study is not None
        row, created = store_prediction(
            session,
            Prediction(
                study_id=study_id,
                job_id=job_id,
                study_version=version,
                series_instance_uid=series_uid,
                bundle_name=bundle.name,
                bundle_version=bundle.version,
                bundle_sha256=bundle.sha256,
                synthetic_demo=bundle.synthetic_demo,
                shadow=shadow,
                probabilities=result.study_probabilities,
                flags=verdict.flags,
                thresholds=verdict.thresholds,
                priority=verdict.priority,
                slice_scores=result.slice_scores,
                timings=timings,
            ),
        )
        job = session.get(Job, job_id)
        if job is not None:
            job.state = JobState.DONE
            job.finished_at = utcnow()
        if created:
            if (
                not shadow
                and study.version == version
                and study.state
                in (
                    StudyState.PROCESSING,
                    StudyState.QUEUED,
                    StudyState.COMPLETE,
                    StudyState.FAILED,
                )
            ):
                queries.set_study_state(session, study, StudyState.PREDICTED, None)
            record_event(
                session,
                AuditEventType.PREDICTION_STORED,
                actor=ACTOR,
                study_instance_uid=study.study_instance_uid,
                detail={
                    "version": version,
                    "bundle": f"{bundle.name} {bundle.version}",
                    "bundle_sha256": bundle.sha256,
                    "shadow": shadow,
                    "priority": verdict.priority,
                    "synthetic_demo": bundle.synthetic_demo,
                },
            )
        session.commit()
    return created


def run_study(
    study_id: int, version: int, *, runtime: WorkerRuntime, task_id: str | None = None
) -> str:
    """Process one study version; returns what happened (for logs and tests)."""
    received = time.time()
    bundle = runtime.bundle(runtime.settings.models.bundle)
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        if study is None:
            return "unknown study"
        if study.version != version:
            return f"stale version {version} (study is at {study.version})"
        if study.state in (StudyState.IGNORED, StudyState.RECEIVING):
            return f"study is {study.state.value}"
        claim = claim_job(
            session,
            study_id=study_id,
            version=version,
            bundle_sha256=bundle.sha256,
            shadow=False,
            task_id=task_id,
        )
        job_id, attempts = claim.job.id, claim.job.attempts
        if claim.already_predicted:
            session.commit()
            return "already predicted"
        completed_at: datetime | None = study.completed_at
        queued_at: datetime | None = study.updated_at if study.state == StudyState.QUEUED else None
        study_uid = study.study_instance_uid
        if attempts > runtime.settings.worker.max_attempts:
            session.commit()
            _fail(
                runtime,
                study_id,
                version,
                job_id,
                f"gave up after {attempts - 1} attempts (worker lost or crashed each time)",
            )
            return "failed: too many attempts"
        queries.set_study_state(session, study, StudyState.PROCESSING, f"attempt {attempts}")
        record_event(
            session,
            AuditEventType.INFERENCE_STARTED,
            actor=ACTOR,
            study_instance_uid=study_uid,
            detail={"version": version, "attempt": attempts, "task_id": task_id},
        )
        candidates, paths = _candidates(session, study)
        session.commit()

    selection = select_series(
        candidates,
        min_slices=runtime.settings.worker.series_min_slices,
        max_tilt_degrees=runtime.settings.worker.series_max_tilt_degrees,
    )
    if selection.series_uid is None:
        _fail(runtime, study_id, version, job_id, selection.reason)
        return "failed: " + selection.reason
    load_started = time.time()
    try:
        datasets = read_series(sorted(paths[selection.series_uid]))
        loaded = time.time()
        result = infer_series(
            bundle, datasets, device=runtime.device, batch_size=runtime.batch_size
        )
    except (StudyDataError, ValueError) as exc:
        _fail(runtime, study_id, version, job_id, str(exc))
        return f"failed: {exc}"
    finished = time.time()
    timings = {
        "completed_at": completed_at.isoformat() if completed_at else None,
        "queued_at": queued_at.isoformat() if queued_at else None,
        "started_at": datetime.fromtimestamp(received, UTC).isoformat(),
        "waited_s": round(received - completed_at.timestamp(), 3) if completed_at else None,
        "read_decode_s": round(loaded - load_started, 3),
        "preprocess_s": round(result.preprocess_seconds, 3),
        "loaded_s": round(loaded - load_started + result.preprocess_seconds, 3),
        "inference_s": round(result.inference_seconds, 3),
        "total_s": round(finished - received, 3),
        "slices": len(datasets),
        "device": runtime.device,
        "selection": selection.reason,
    }
    created = _store(
        runtime,
        study_id=study_id,
        version=version,
        job_id=job_id,
        bundle=bundle,
        shadow=False,
        series_uid=selection.series_uid,
        result=result,
        timings=timings,
    )
    if runtime.settings.models.shadow_bundle is not None:
        _run_shadow(runtime, study_id, version, selection.series_uid, datasets, task_id)
    return "predicted" if created else "already predicted"


def _run_shadow(
    runtime: WorkerRuntime,
    study_id: int,
    version: int,
    series_uid: str,
    datasets: list[Any],
    task_id: str | None,
) -> None:
    """Run the shadow bundle on the same slices; stored marked shadow, never delivered."""
    assert runtime.settings.models.shadow_bundle is not None
    shadow = runtime.bundle(runtime.settings.models.shadow_bundle)
    with runtime.sessions() as session:
        claim = claim_job(
            session,
            study_id=study_id,
            version=version,
            bundle_sha256=shadow.sha256,
            shadow=True,
            task_id=task_id,
        )
        session.commit()
        if claim.already_predicted:
            return
        job_id = claim.job.id
    started = time.time()
    result = infer_series(shadow, datasets, device=runtime.device, batch_size=runtime.batch_size)
    _store(
        runtime,
        study_id=study_id,
        version=version,
        job_id=job_id,
        bundle=shadow,
        shadow=True,
        series_uid=series_uid,
        result=result,
        timings={"total_s": round(time.time() - started, 3), "device": runtime.device},
    )


def register_tasks(app: Celery) -> None:
    """Register the study task on ``app`` under its public name."""

    @app.task(
        name=PROCESS_STUDY_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=(OperationalError,),
        retry_backoff=2,
        retry_backoff_max=120,
        max_retries=10,
    )
    def process_study(self: Any, study_id: int, version: int) -> str:
        outcome = run_study(study_id, version, runtime=get_runtime(), task_id=self.request.id)
        log.info("study %d v%d: %s", study_id, version, outcome, extra={"task_id": self.request.id})
        return outcome
