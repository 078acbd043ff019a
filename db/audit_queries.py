"""What auditors and QA ask of the database: the access log and the questions about results.

Each function returns plain rows (dicts of JSON-ready values) so that ``triage audit`` and
the web app print the same answers as table, JSON or CSV. Time ranges are half-open
[since, until); results count by their deployed (non-shadow) prediction unless a question
is about the shadow bundle.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import AuditEvent, Delivery, Prediction, Study
from db.vocabulary import AuditEventType, DeliveryState, StudyState


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def audit_log(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    event_types: Sequence[AuditEventType] = (),
    actor: str | None = None,
    study_instance_uid: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Audit events oldest first, from ``after_id`` on (keyset pages)."""
    query = select(AuditEvent).where(AuditEvent.id > after_id)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if event_types:
        query = query.where(AuditEvent.event_type.in_(list(event_types)))
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if study_instance_uid is not None:
        query = query.where(AuditEvent.study_instance_uid == study_instance_uid)
    events = session.scalars(query.order_by(AuditEvent.id).limit(limit)).all()
    return [
        {
            "id": e.id,
            "at": _iso(e.at),
            "event_type": e.event_type.value,
            "actor": e.actor,
            "study_instance_uid": e.study_instance_uid,
            "detail": e.detail or {},
        }
        for e in events
    ]


def _predictions_in(
    session: Session, since: datetime | None, until: datetime | None, *, shadow: bool | None
) -> list[tuple[Prediction, Study]]:
    query = select(Prediction, Study).join(Study, Study.id == Prediction.study_id)
    if since is not None:
        query = query.where(Prediction.created_at >= since)
    if until is not None:
        query = query.where(Prediction.created_at < until)
    if shadow is not None:
        query = query.where(Prediction.shadow.is_(shadow))
    return [(p, s) for p, s in session.execute(query.order_by(Prediction.id)).all()]


def _latest_per_study(rows: list[tuple[Prediction, Study]]) -> list[tuple[Prediction, Study]]:
    latest: dict[tuple[int, bool], tuple[Prediction, Study]] = {}
    for prediction, study in rows:
        latest[(study.id, prediction.shadow)] = (prediction, study)
    return list(latest.values())


def _bundle_matches(prediction: Prediction, bundle: str | None) -> bool:
    """A bundle is named by its name, its version or a prefix (>= 8 hex) of its sha256."""
    if bundle is None:
        return True
    if bundle in (prediction.bundle_name, prediction.bundle_version):
        return True
    return len(bundle) >= 8 and prediction.bundle_sha256.startswith(bundle.lower())


def findings(
    session: Session,
    *,
    finding: str,
    min_probability: float,
    since: datetime | None = None,
    until: datetime | None = None,
    bundle: str | None = None,
) -> list[dict[str, Any]]:
    """Studies whose result in the range says ``finding`` >= ``min_probability``.

    With ``bundle`` the question is about that bundle's results, shadow ones included.
    """
    rows = _predictions_in(session, since, until, shadow=None if bundle else False)
    out = []
    for p, s in _latest_per_study(rows):
        probability = (p.probabilities or {}).get(finding)
        if probability is None or probability < min_probability:
            continue
        if not _bundle_matches(p, bundle):
            continue
        out.append(
            {
                "study_instance_uid": s.study_instance_uid,
                "calling_aet": s.calling_aet,
                "finding": finding,
                "probability": round(float(probability), 4),
                "flagged": bool((p.flags or {}).get(finding)),
                "priority": p.priority.value,
                "assessed": p.assessed,
                "bundle_name": p.bundle_name,
                "bundle_version": p.bundle_version,
                "bundle_sha256": p.bundle_sha256,
                "shadow": p.shadow,
                "synthetic_demo": p.synthetic_demo,
                "predicted_at": _iso(p.created_at),
            }
        )
    return out


def _delivered_prediction_times(session: Session) -> dict[int, datetime]:
    """Prediction id -> when its first delivery succeeded."""
    rows = session.execute(
        select(Delivery.prediction_id, Delivery.acknowledged_at).where(
            Delivery.state == DeliveryState.SENT, Delivery.acknowledged_at.is_not(None)
        )
    ).all()
    first: dict[int, datetime] = {}
    for prediction_id, at in rows:
        if at is None:
            continue
        if prediction_id not in first or at < first[prediction_id]:
            first[prediction_id] = at
    return first


def never_delivered(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Studies first received in the range of which no result was ever delivered, and why."""
    query = select(Study)
    if since is not None:
        query = query.where(Study.first_received_at >= since)
    if until is not None:
        query = query.where(Study.first_received_at < until)
    studies = session.scalars(query.order_by(Study.first_received_at)).all()
    delivered_predictions = set(_delivered_prediction_times(session))
    predictions = session.execute(
        select(Prediction.id, Prediction.study_id, Prediction.priority).where(
            Prediction.shadow.is_(False)
        )
    ).all()
    delivered_studies = {sid for pid, sid, _ in predictions if pid in delivered_predictions}
    latest_priority = {sid: priority for _, sid, priority in predictions}
    attempts: dict[int, list[str]] = defaultdict(list)
    for study_id, delivery in session.execute(
        select(Prediction.study_id, Delivery).join(
            Prediction, Prediction.id == Delivery.prediction_id
        )
    ).all():
        attempts[study_id].append(
            f"{delivery.channel} {delivery.destination}: {delivery.state.value}"
            f" after {delivery.attempts} attempt(s)"
        )
    return [
        {
            "study_instance_uid": s.study_instance_uid,
            "calling_aet": s.calling_aet,
            "state": s.state.value,
            "state_reason": s.state_reason,
            "priority": latest_priority[s.id].value if s.id in latest_priority else None,
            "first_received_at": _iso(s.first_received_at),
            "deliveries": "; ".join(attempts.get(s.id, [])) or "none attempted",
        }
        for s in studies
        if s.id not in delivered_studies
    ]


def not_assessed(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Studies the model did not assess, and why: results refused by the adequacy or
    domain check, and studies that failed or were ignored before any result."""
    out = [
        {
            "study_instance_uid": s.study_instance_uid,
            "calling_aet": s.calling_aet,
            "kind": "not assessed" if p.in_domain else "out of domain",
            "reasons": "; ".join(p.reasons or []) or None,
            "bundle_version": p.bundle_version,
            "at": _iso(p.created_at),
        }
        for p, s in _latest_per_study(_predictions_in(session, since, until, shadow=False))
        if not p.assessed
    ]
    query = select(Study).where(Study.state.in_([StudyState.FAILED, StudyState.IGNORED]))
    if since is not None:
        query = query.where(Study.updated_at >= since)
    if until is not None:
        query = query.where(Study.updated_at < until)
    out += [
        {
            "study_instance_uid": s.study_instance_uid,
            "calling_aet": s.calling_aet,
            "kind": s.state.value,
            "reasons": s.state_reason,
            "bundle_version": None,
            "at": _iso(s.updated_at),
        }
        for s in session.scalars(query.order_by(Study.updated_at)).all()
    ]
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean_s": None, "p95_s": None}
    return {
        "n": len(values),
        "mean_s": round(sum(values) / len(values), 3),
        "p95_s": round(percentile(values, 95), 3),
    }


def latency_samples(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> list[tuple[datetime, float, float | None]]:
    """(last image time, last image -> result s, last image -> delivered s or None) per
    deployed result of the study version whose last image is known (its current one)."""
    delivered = _delivered_prediction_times(session)
    samples = []
    for p, s in _predictions_in(session, since, until, shadow=False):
        if p.study_version != s.version:
            continue  # the study was reopened: its last image belongs to a later version
        last = s.last_received_at
        to_delivery = delivered.get(p.id)
        samples.append(
            (
                last,
                max(0.0, (p.created_at - last).total_seconds()),
                max(0.0, (to_delivery - last).total_seconds()) if to_delivery else None,
            )
        )
    return samples


def latency_per_day(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Last image -> result and last image -> delivered, mean and p95, per UTC day."""
    by_day: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for last, to_result, to_delivery in latency_samples(session, since=since, until=until):
        results, deliveries = by_day[last.date().isoformat()]
        results.append(to_result)
        if to_delivery is not None:
            deliveries.append(to_delivery)
    out = []
    for day in sorted(by_day):
        results, deliveries = by_day[day]
        result, delivery = _summary(results), _summary(deliveries)
        out.append(
            {
                "day": day,
                "results": result["n"],
                "to_result_mean_s": result["mean_s"],
                "to_result_p95_s": result["p95_s"],
                "delivered": delivery["n"],
                "to_delivered_mean_s": delivery["mean_s"],
                "to_delivered_p95_s": delivery["p95_s"],
            }
        )
    return out


def shadow_agreement(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """How often each shadow bundle agreed with the deployed one on the same study version:
    the priority, and every class flag, over the pairs both assessed."""
    rows = _predictions_in(session, since, until, shadow=None)
    deployed = {(p.study_id, p.study_version): p for p, _ in rows if not p.shadow}
    pairs: dict[tuple[str, str, str], list[tuple[Prediction, Prediction]]] = defaultdict(list)
    for shadow, _ in rows:
        main = deployed.get((shadow.study_id, shadow.study_version))
        if shadow.shadow and main is not None:
            key = (shadow.bundle_name, shadow.bundle_version, shadow.bundle_sha256)
            pairs[key].append((main, shadow))
    out = []
    for (name, version, sha), matched in sorted(pairs.items()):
        both = [(m, s) for m, s in matched if m.assessed and s.assessed]
        classes = sorted({c for m, s in both for c in (m.flags or {}) if c in (s.flags or {})})
        row: dict[str, Any] = {
            "shadow_bundle": f"{name} {version}",
            "shadow_sha256": sha,
            "pairs": len(matched),
            "both_assessed": len(both),
            "priority_agreement": (
                round(sum(m.priority == s.priority for m, s in both) / len(both), 4)
                if both
                else None
            ),
        }
        for cls in classes:
            agree = sum(bool(m.flags[cls]) == bool(s.flags[cls]) for m, s in both)
            row[f"agreement_{cls}"] = round(agree / len(both), 4)
        out.append(row)
    return out


def positive_rate(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Share of assessed results with any finding flagged, per calling AE and ISO week:
    a scanner drifting (new protocol, new kernel) shows up as a rate that moves."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for p, s in _latest_per_study(_predictions_in(session, since, until, shadow=False)):
        year, week, _ = p.created_at.isocalendar()
        entry = counts[(s.calling_aet or "-", f"{year}-W{week:02d}")]
        if not p.assessed:
            entry[2] += 1
            continue
        entry[0] += 1
        entry[1] += int(any(bool(v) for v in (p.flags or {}).values()))
    return [
        {
            "calling_aet": aet,
            "week": week,
            "assessed": assessed,
            "positive": positive,
            "positive_rate": round(positive / assessed, 4) if assessed else None,
            "not_assessed": unassessed,
        }
        for (aet, week), (assessed, positive, unassessed) in sorted(counts.items())
    ]
