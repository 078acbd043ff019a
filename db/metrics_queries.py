"""Figures for the Prometheus endpoint, read from the database at scrape time.

The listener and the workers are separate processes (often on separate hosts) and keep no
shared counters; the database already holds every instance, study, job, result and
delivery, so a count taken here is the same whichever process is scraped and survives
restarts. What the database does not hold (accepted associations) is not faked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.audit_queries import latency_samples
from db.models import AuditEvent, Delivery, Instance, Job, Prediction, Study
from db.vocabulary import AuditEventType, DeliveryState, JobState, StudyState


@dataclass(frozen=True)
class MetricsSnapshot:
    """Everything one scrape reports."""

    instances: int
    studies: int
    associations_rejected: int
    studies_by_state: dict[StudyState, int]
    jobs_by_state: dict[JobState, int]
    inference_seconds: list[float]
    to_result_seconds: list[float]
    to_delivered_seconds: list[float]
    delivery_failures: dict[tuple[str, str], int]  # (channel, destination) -> failed attempts
    last_job_finished_at: datetime | None
    bundles_in_use: list[dict[str, Any]]


def _counts_by(session: Session, column: Any) -> dict[Any, int]:
    return {
        key: int(n) for key, n in session.execute(select(column, func.count()).group_by(column))
    }


def snapshot(session: Session) -> MetricsSnapshot:
    """Read every figure in one short read-only unit of work."""
    inference = []
    for (timings,) in session.execute(
        select(Prediction.timings).where(Prediction.shadow.is_(False))
    ):
        value = (timings or {}).get("inference_s")
        if isinstance(value, int | float):
            inference.append(float(value))
    samples = latency_samples(session)
    failures: dict[tuple[str, str], int] = {}
    for channel, destination, state, attempts in session.execute(
        select(Delivery.channel, Delivery.destination, Delivery.state, Delivery.attempts)
    ):
        # Every attempt of a delivery that is not (yet) delivered failed; of a delivered
        # one, all but the last.
        failed = attempts - (1 if state == DeliveryState.SENT else 0)
        if state == DeliveryState.PENDING:
            failed = attempts
        failures[(channel, destination)] = failures.get((channel, destination), 0) + max(0, failed)
    bundles = []
    for shadow in (False, True):
        newest = session.execute(
            select(
                Prediction.bundle_name,
                Prediction.bundle_version,
                Prediction.bundle_sha256,
                Prediction.synthetic_demo,
            )
            .where(Prediction.shadow.is_(shadow))
            .order_by(Prediction.id.desc())
            .limit(1)
        ).one_or_none()
        if newest is not None:
            name, version, sha, demo = newest
            bundles.append(
                {"name": name, "version": version, "sha256": sha, "synthetic_demo": demo,
                 "shadow": shadow}
            )  # fmt: skip
    return MetricsSnapshot(
        instances=int(session.scalar(select(func.count(Instance.id))) or 0),
        studies=int(session.scalar(select(func.count(Study.id))) or 0),
        associations_rejected=int(
            session.scalar(
                select(func.count(AuditEvent.id)).where(
                    AuditEvent.event_type == AuditEventType.ASSOCIATION_REJECTED
                )
            )
            or 0
        ),
        studies_by_state=_counts_by(session, Study.state),
        jobs_by_state=_counts_by(session, Job.state),
        inference_seconds=inference,
        to_result_seconds=[to_result for _, to_result, _ in samples],
        to_delivered_seconds=[d for _, _, d in samples if d is not None],
        delivery_failures=failures,
        last_job_finished_at=session.scalar(select(func.max(Job.finished_at))),
        bundles_in_use=bundles,
    )
