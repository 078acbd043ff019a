"""Inference bookkeeping: jobs (the idempotency key) and predictions (the durable result).

A job is keyed by (study, study version, bundle sha256). Running the task again for the
same key never creates a second prediction: :func:`store_prediction` inserts under the
same unique key and reports an existing row instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Job, Prediction, Study, utcnow
from db.vocabulary import JobState, StudyState


@dataclass(frozen=True)
class JobClaim:
    """The job row for this run and whether its prediction already exists."""

    job: Job
    already_predicted: bool


def find_prediction(
    session: Session, study_id: int, version: int, bundle_sha256: str
) -> Prediction | None:
    """The prediction for this key, if one was stored."""
    return session.scalars(
        select(Prediction).where(
            Prediction.study_id == study_id,
            Prediction.study_version == version,
            Prediction.bundle_sha256 == bundle_sha256,
        )
    ).one_or_none()


def claim_job(
    session: Session,
    *,
    study_id: int,
    version: int,
    bundle_sha256: str,
    shadow: bool,
    task_id: str | None,
) -> JobClaim:
    """Get or create the job for this key and count one more attempt (caller commits)."""
    job = session.scalars(
        select(Job).where(
            Job.study_id == study_id,
            Job.study_version == version,
            Job.bundle_sha256 == bundle_sha256,
        )
    ).one_or_none()
    if job is None:
        job = Job(
            study_id=study_id,
            study_version=version,
            bundle_sha256=bundle_sha256,
            shadow=shadow,
            state=JobState.QUEUED,
            attempts=0,
        )
        try:
            with session.begin_nested():
                session.add(job)
        except IntegrityError:
            return claim_job(
                session,
                study_id=study_id,
                version=version,
                bundle_sha256=bundle_sha256,
                shadow=shadow,
                task_id=task_id,
            )
    done = find_prediction(session, study_id, version, bundle_sha256) is not None
    if not done:
        job.attempts += 1
        job.state = JobState.RUNNING
        job.started_at = utcnow()
        job.task_id = task_id
    return JobClaim(job, done)


def finish_job(session: Session, job_id: int, state: JobState, reason: str | None = None) -> None:
    """Close the job's run as ``done`` or ``failed`` with why (caller commits); no-op if gone."""
    if state not in (JobState.DONE, JobState.FAILED):
        raise ValueError(f"state must be done or failed to finish a job, got {state!r}")
    job = session.get(Job, job_id)
    if job is None:
        return
    job.state = state
    if reason is not None:
        job.reason = reason
    job.finished_at = utcnow()


def store_prediction(session: Session, prediction: Prediction) -> tuple[Prediction, bool]:
    """Insert ``prediction`` unless its key exists; returns (row, created)."""
    try:
        with session.begin_nested():
            session.add(prediction)
    except IntegrityError:
        existing = find_prediction(
            session, prediction.study_id, prediction.study_version, prediction.bundle_sha256
        )
        if existing is None:
            raise
        return existing, False
    return prediction, True


def studies_to_requeue(
    session: Session, *, now: datetime | None = None, older_than: timedelta, stuck_after: timedelta
) -> Sequence[Study]:
    """Studies the queue may have lost: complete/queued for ``older_than`` without a result,
    or processing for longer than ``stuck_after`` (a worker died and nothing redelivered)."""
    now = now or utcnow()
    waiting = select(Study).where(
        Study.state.in_([StudyState.COMPLETE, StudyState.QUEUED]),
        Study.updated_at < now - older_than,
    )
    stuck = select(Study).where(
        Study.state == StudyState.PROCESSING, Study.updated_at < now - stuck_after
    )
    return [*session.scalars(waiting).all(), *session.scalars(stuck).all()]


def latest_predictions(session: Session, *, include_shadow: bool = False) -> list[dict[str, Any]]:
    """Newest prediction per study, for audit and the worklist."""
    query = select(Prediction, Study).join(Study, Study.id == Prediction.study_id)
    if not include_shadow:
        query = query.where(Prediction.shadow.is_(False))
    rows = session.execute(query.order_by(Prediction.created_at)).all()
    latest: dict[tuple[int, bool], tuple[Prediction, Study]] = {}
    for prediction, study in rows:
        latest[(study.id, prediction.shadow)] = (prediction, study)
    return [
        {
            "study_instance_uid": study.study_instance_uid,
            "study_version": p.study_version,
            "state": study.state.value,
            "priority": p.priority,
            "probabilities": p.probabilities,
            "flags": p.flags,
            "bundle_name": p.bundle_name,
            "bundle_version": p.bundle_version,
            "bundle_sha256": p.bundle_sha256,
            "synthetic_demo": p.synthetic_demo,
            "shadow": p.shadow,
            "series_instance_uid": p.series_instance_uid,
            "created_at": p.created_at.isoformat(),
            "timings": p.timings,
            "assessed": p.assessed,
            "in_domain": p.in_domain,
            "domain_score": p.domain_score,
            "reasons": list(p.reasons or []),
        }
        for p, study in latest.values()
    ]
