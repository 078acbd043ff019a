"""The study task: complete study -> series selection -> both model stages -> stored prediction.

Exactly once, nothing lost:

* the message is acknowledged late and rejected back to the queue if the worker dies
  (settings in ``triage.queue``), so a SIGKILL mid-inference means a redelivery;
* each delivery counts an attempt on the job row; past ``max_attempts`` the study is
  ``failed`` with the reason, so a poison study never loops forever;
* the prediction is inserted under a unique (study, version, bundle sha256) key, so a
  redelivered or duplicated task never stores a second one;
* transient database errors retry with backoff; an undecodable study fails at once.

One bad slice never costs the study: slices that cannot be decoded are dropped and listed
(SOP Instance UID and reason) in the prediction's ``timings`` and the audit log; the study
is judged when what remains passes :func:`~worker.series_selection.why_not_after_drops`,
and otherwise ends ``failed`` with a reason that starts "not assessed".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db import queries
from db.audit import record_event
from db.models import Prediction, Series, Study
from db.results import claim_job, finish_job, store_prediction
from db.study_states import allowed, transition
from db.vocabulary import AuditEventType, JobState, Priority, StudyState, TaskOutcome
from triage.queue import PROCESS_STUDY_TASK, DeliveryQueue
from triage.series_kind import parse_orientation
from worker.adequacy import Assessment, adequacy_reasons, assess
from worker.delivery import enqueue as delivery
from worker.priority import triage
from worker.runtime import WorkerRuntime, get_runtime
from worker.series_headers import read_series_header
from worker.series_selection import (
    SeriesCandidate,
    SliceFacts,
    select_series,
    why_not_after_drops,
)
from worker.study_inference import StudyResult, infer_series
from worker.volume_loader import DroppedSlice, StudyDataError, load_series

log = logging.getLogger(__name__)
ACTOR = "worker"
# The audit detail of a refused study lists this many dropped slices and counts the rest:
# a study whose every slice is broken must not write a thousand-entry audit row.
MAX_LISTED_DROPS = 20


def _candidates(
    session: Session, study: Study
) -> tuple[list[SeriesCandidate], dict[str, dict[str, Path]]]:
    rows = queries.series_instances(session, study.id)
    slices: dict[str, list[SliceFacts]] = {}
    paths: dict[str, dict[str, Path]] = {}  # series UID -> SOP Instance UID -> file
    meta: dict[str, Series] = {}
    for series, instance in rows:
        uid = series.series_instance_uid
        meta[uid] = series
        slices.setdefault(uid, []).append(
            SliceFacts(
                instance.sop_class_uid,
                parse_orientation(instance.image_orientation),
                instance.position_z,
                instance.sop_instance_uid,
            )
        )
        paths.setdefault(uid, {})[instance.sop_instance_uid] = Path(instance.file_path)
    candidates = [
        SeriesCandidate(
            uid,
            meta[uid].modality,
            meta[uid].series_description,
            facts,
            read_series_header(paths[uid][min(paths[uid])]),
            meta[uid].series_number,
        )
        for uid, facts in slices.items()
    ]
    return candidates, paths


def _files(paths: dict[str, dict[str, Path]]) -> list[Path]:
    """Every spooled file of the study (series UID -> SOP UID -> file), flattened."""
    return [path for series in paths.values() for path in series.values()]


def _dropped_detail(dropped: list[DroppedSlice], limit: int | None = None) -> list[dict[str, str]]:
    listed = dropped if limit is None else dropped[:limit]
    return [{"sop_instance_uid": d.sop_instance_uid, "reason": d.reason} for d in listed]


def _fail(
    runtime: WorkerRuntime,
    study_id: int,
    version: int,
    job_id: int | None,
    reason: str,
    dropped: list[DroppedSlice] | None = None,
    *,
    bundle: Any = None,
    files: list[Path] | None = None,
) -> list[int]:
    """Fail the study; with destinations configured, deliver a not-assessed result too.

    Never silence: the not-assessed prediction (and its SR, built from one readable header
    of ``files``) is stored and queued in the same transaction as the failure.
    """
    spooled = None
    unjudged = None
    if bundle is not None and runtime.settings.delivery.any:
        unjudged = delivery.not_assessed_prediction(
            study_id=study_id, version=version, job_id=job_id, bundle=bundle, reason=reason
        )
        spooled = delivery.prepare_quietly(
            runtime, unjudged, study_id, delivery.first_header(files or []), bundle
        )
    queued: list[int] = []
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        if study is None:
            return []
        if unjudged is not None and study.version == version:
            row, created = store_prediction(session, unjudged)
            if created:
                queued = delivery.enqueue_result(session, runtime.settings, row, spooled)
        # Late images may have reopened the study meanwhile: its next version will run,
        # so the table (receiving -/-> failed) leaves it receiving.
        if study.version == version and allowed(study.state, StudyState.FAILED):
            transition(session, study, StudyState.FAILED, reason[:2000])
        if job_id is not None:
            finish_job(session, job_id, JobState.FAILED, reason[:2000])
        record_event(
            session,
            AuditEventType.INFERENCE_FAILED,
            actor=ACTOR,
            study_instance_uid=study.study_instance_uid,
            detail={
                "version": version,
                "reason": reason[:500],
                **(
                    {
                        "dropped_count": len(dropped),
                        "dropped_slices": _dropped_detail(dropped, MAX_LISTED_DROPS),
                    }
                    if dropped
                    else {}
                ),
            },
        )
        session.commit()
    log.error("study failed: %s", reason)
    return queued


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
    assessment: Assessment,
    datasets: list[Any],
) -> tuple[bool, list[int]]:
    """Store the prediction and, in the same transaction, its outbox rows.

    The documents are built and spooled first (they need the model and the slices), so
    the committed rows always point at a complete result folder. Returns (created, the
    ids of the deliveries queued).
    """
    verdict = triage(
        result.study_probabilities, bundle.thresholds, runtime.settings.models.thresholds
    )
    # A study the model cannot judge raises nothing and is never shown as routine.
    flags = verdict.flags if assessment.assessed else dict.fromkeys(verdict.flags, False)
    priority = verdict.priority if assessment.assessed else Priority.NOT_ASSESSED
    prediction = Prediction(
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
        flags=flags,
        thresholds=verdict.thresholds,
        priority=priority,
        slice_scores=result.slice_scores,
        timings=timings,
        assessed=assessment.assessed,
        in_domain=assessment.in_domain,
        domain_score=assessment.domain_score,
        reasons=assessment.reasons,
    )
    spooled = (
        None
        if shadow
        else delivery.prepare_quietly(
            runtime, prediction, study_id, datasets, bundle, result.model_input
        )
    )
    if spooled is not None:
        prediction.timings = {**timings, "documents": spooled.timings}
    queued: list[int] = []
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        assert study is not None
        row, created = store_prediction(session, prediction)
        finish_job(session, job_id, JobState.DONE)
        if created:
            queued = delivery.enqueue_result(session, runtime.settings, row, spooled)
            # Only the main bundle's result for the current version moves the study, and
            # only where the table allows (not a study reopened or already delivered).
            if (
                not shadow
                and study.version == version
                and allowed(study.state, StudyState.PREDICTED)
            ):
                why = "; ".join(assessment.reasons)[:2000] or None
                transition(session, study, StudyState.PREDICTED, why)
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
                    "priority": priority,
                    "assessed": assessment.assessed,
                    "in_domain": assessment.in_domain,
                    "domain_score": assessment.domain_score,
                    "reasons": assessment.reasons,
                    "synthetic_demo": bundle.synthetic_demo,
                    "dropped_slices": timings.get("dropped_slices", []),
                    "deliveries": len(queued),
                },
            )
        session.commit()
    return created, queued


@dataclass(frozen=True)
class StudyRun:
    """What one run of the study task did: the outcome, and for people the detail."""

    outcome: TaskOutcome
    detail: str | None = None
    delivery_ids: tuple[int, ...] = ()  # outbox rows this run queued (the delivery worker is woken)

    def __str__(self) -> str:
        return f"{self.outcome}: {self.detail}" if self.detail else str(self.outcome)


def run_study(
    study_id: int, version: int, *, runtime: WorkerRuntime, task_id: str | None = None
) -> StudyRun:
    """Process one study version; returns what happened (for logs, the result and tests)."""
    received = time.time()
    bundle = runtime.bundle(runtime.settings.models.bundle)
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        if study is None:
            return StudyRun(TaskOutcome.UNKNOWN_STUDY)
        if study.version != version:
            return StudyRun(TaskOutcome.STALE_VERSION, f"{version} (study is at {study.version})")
        if not allowed(study.state, StudyState.PROCESSING):  # receiving again, or ignored
            return StudyRun(TaskOutcome.NOT_READY, f"study is {study.state.value}")
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
            return StudyRun(TaskOutcome.ALREADY_PREDICTED)
        completed_at: datetime | None = study.completed_at
        queued_at: datetime | None = study.updated_at if study.state == StudyState.QUEUED else None
        study_uid = study.study_instance_uid
        if attempts > runtime.settings.worker.max_attempts:
            files = _files(_candidates(session, study)[1])
            session.commit()
            queued = _fail(
                runtime,
                study_id,
                version,
                job_id,
                f"gave up after {attempts - 1} attempts (worker lost or crashed each time)",
                bundle=bundle,
                files=files,
            )
            return StudyRun(TaskOutcome.FAILED, "too many attempts", tuple(queued))
        transition(session, study, StudyState.PROCESSING, f"attempt {attempts}")
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
        thickness_range=bundle.input_domain.adequacy.slice_thickness_mm,
    )
    if selection.series_uid is None:
        queued = _fail(
            runtime,
            study_id,
            version,
            job_id,
            selection.reason,
            bundle=bundle,
            files=_files(paths),
        )
        return StudyRun(TaskOutcome.FAILED, selection.reason, tuple(queued))
    load_started = time.time()
    try:
        loaded_series = load_series(paths[selection.series_uid])
        loaded = time.time()
        datasets, dropped = loaded_series.datasets, loaded_series.dropped
        if dropped:
            refused = _refuse_after_drops(candidates, selection.series_uid, dropped, runtime)
            if refused is not None:
                queued = _fail(
                    runtime,
                    study_id,
                    version,
                    job_id,
                    refused,
                    dropped,
                    bundle=bundle,
                    files=_files(paths),
                )
                return StudyRun(TaskOutcome.FAILED, refused, tuple(queued))
        result, assessment = _judge(runtime, bundle, datasets)
    except (StudyDataError, ValueError) as exc:
        queued = _fail(
            runtime, study_id, version, job_id, str(exc), bundle=bundle, files=_files(paths)
        )
        return StudyRun(TaskOutcome.FAILED, str(exc), tuple(queued))
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
        "dropped_slices": _dropped_detail(dropped),
    }
    if not assessment.assessed:
        log.warning("study %d v%d not assessed: %s", study_id, version, assessment.reasons)
    created, queued = _store(
        runtime,
        study_id=study_id,
        version=version,
        job_id=job_id,
        bundle=bundle,
        shadow=False,
        series_uid=selection.series_uid,
        result=result,
        timings=timings,
        assessment=assessment,
        datasets=datasets,
    )
    if runtime.settings.models.shadow_bundle is not None:
        _run_shadow(runtime, study_id, version, selection.series_uid, datasets, task_id)
    if not created:
        return StudyRun(TaskOutcome.ALREADY_PREDICTED)
    if not assessment.assessed:
        return StudyRun(TaskOutcome.NOT_ASSESSED, "; ".join(assessment.reasons), tuple(queued))
    return StudyRun(TaskOutcome.PREDICTED, delivery_ids=tuple(queued))


def _judge(
    runtime: WorkerRuntime, bundle: Any, datasets: list[Any]
) -> tuple[StudyResult, Assessment]:
    """Gate on adequacy, run the bundle (embeddings only when inadequate), score the domain."""
    inadequate = adequacy_reasons(datasets, bundle.input_domain.adequacy)
    result = infer_series(
        bundle,
        datasets,
        device=runtime.device,
        batch_size=runtime.batch_size,
        judge=not inadequate,
        # the key images' Grad-CAM reuses what the model saw (only when results are sent)
        keep_input=runtime.settings.delivery.any and runtime.settings.delivery.key_images,
    )
    return result, assess(inadequate, bundle.input_domain.summary, result.embeddings)


def _refuse_after_drops(
    candidates: list[SeriesCandidate],
    series_uid: str,
    dropped: list[DroppedSlice],
    runtime: WorkerRuntime,
) -> str | None:
    """The "not assessed" reason when the dropped slices leave too little to judge, or None."""
    [chosen] = [c for c in candidates if c.series_uid == series_uid]
    why = why_not_after_drops(
        chosen.slices,
        {d.sop_instance_uid for d in dropped},
        min_slices=runtime.settings.worker.series_min_slices,
    )
    log.warning(
        "series %s: dropped %d undecodable slices; %s",
        series_uid,
        len(dropped),
        why or "judged on the rest",
    )
    if why is None:
        return None
    return (
        f"not assessed: cannot decode {len(dropped)} of {len(chosen.slices)} slices ({why}); "
        f"first: {dropped[0].sop_instance_uid}: {dropped[0].reason}"
    )


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
    result, assessment = _judge(runtime, shadow, datasets)
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
        assessment=assessment,
        datasets=datasets,
    )


def register_tasks(app: Celery) -> None:
    """Register the study task on ``app`` under its public name."""
    wake_delivery = DeliveryQueue(app)

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
        run = run_study(study_id, version, runtime=get_runtime(), task_id=self.request.id)
        log.info("study %d v%d: %s", study_id, version, run, extra={"task_id": self.request.id})
        if run.delivery_ids:
            try:
                wake_delivery(list(run.delivery_ids))
            except Exception as exc:  # the delivery worker's sweep finds the rows anyway
                log.warning("could not wake the delivery worker (%s)", type(exc).__name__)
        return str(run)
