"""The worklist's queries: studies filtered, ranked by priority then arrival, one study in full.

Ranking follows :class:`~db.vocabulary.Priority` (its order is the rank); a study with no
result yet ranks after every result so that it is never mistaken for a routine one. The
newest deployed (non-shadow) prediction of a study is its result; a shadow result is shown
beside it in the detail view, never in its place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, exists, func, select
from sqlalchemy.orm import Session, aliased

from db.models import (
    Acknowledgement,
    Delivery,
    Instance,
    Prediction,
    Series,
    Study,
    WebUser,
)
from db.vocabulary import DeliveryState, Priority, StudyState

PENDING_RANK = len(Priority)  # no result yet: after every priority, never "routine"


def _rank() -> Any:
    """The study's worklist rank: the priority of its newest deployed result, else pending.

    A correlated lookup answered from the index ix_predictions_latest (study, shadow, id,
    priority) alone, so ranking every study reads no prediction row (rows carry the JSON).
    """
    latest_priority = (
        select(Prediction.priority)
        .where(Prediction.study_id == Study.id, Prediction.shadow.is_(False))
        .order_by(Prediction.id.desc())
        .limit(1)
        .correlate(Study)
        .scalar_subquery()
    )
    # CASE x WHEN ...: the lookup runs once per study, not once per priority.
    return case(
        {p.value: rank for rank, p in enumerate(Priority)},
        value=latest_priority,
        else_=PENDING_RANK,
    )


@dataclass(frozen=True)
class StudyFilter:
    """What the worklist and ``GET /api/studies`` may filter on (all optional, all ANDed)."""

    received_from: datetime | None = None
    received_to: datetime | None = None
    states: list[StudyState] = field(default_factory=list)
    finding: str | None = None  # flagged for this class (or, with min_probability, >= p)
    min_probability: float | None = None
    priorities: list[Priority] = field(default_factory=list)
    bundle_version: str | None = None
    calling_aet: str | None = None
    delivered: bool | None = None
    assessed: bool | None = None


def _latest_deployed_id() -> Any:
    """Correlated scalar: the id of the study's newest deployed (non-shadow) prediction.

    Correlated rather than a grouped subquery: each study costs one index seek on
    predictions(study_id), where a grouped subquery is materialised and joined unindexed.
    """
    return (
        select(func.max(Prediction.id))
        .where(Prediction.study_id == Study.id, Prediction.shadow.is_(False))
        .correlate(Study)
        .scalar_subquery()
    )


def _delivered_clause() -> Any:
    """Any prediction of the study with a sent delivery.

    Written prediction-first (a nested EXISTS) so that SQLite, which has no statistics on
    a young database, looks up each prediction's deliveries by index
    (``ix_deliveries_prediction_state``) instead of scanning every sent delivery per study.
    """
    any_prediction = aliased(Prediction)  # not the outer query's latest prediction
    sent = exists(
        select(Delivery.id).where(
            Delivery.prediction_id == any_prediction.id, Delivery.state == DeliveryState.SENT
        )
    )
    return exists(select(any_prediction.id).where(any_prediction.study_id == Study.id, sent))


def _needs_prediction(flt: StudyFilter) -> bool:
    return bool(
        flt.finding or flt.min_probability is not None or flt.priorities
        or flt.bundle_version or flt.assessed is not None
    )  # fmt: skip


def _filtered(query: Select[Any], flt: StudyFilter) -> Select[Any]:
    conditions: list[Any] = []
    if flt.received_from is not None:
        conditions.append(Study.last_received_at >= flt.received_from)
    if flt.received_to is not None:
        conditions.append(Study.first_received_at < flt.received_to)
    if flt.states:
        conditions.append(Study.state.in_(flt.states))
    if flt.finding is not None:
        if flt.min_probability is not None:
            probability = Prediction.probabilities[flt.finding].as_float()
            conditions.append(probability >= flt.min_probability)
        else:
            conditions.append(Prediction.flags[flt.finding].as_boolean().is_(True))
    elif flt.min_probability is not None:
        raise ValueError("min_probability needs a finding to compare")
    if flt.priorities:
        conditions.append(Prediction.priority.in_(flt.priorities))
    if flt.bundle_version is not None:
        conditions.append(Prediction.bundle_version == flt.bundle_version)
    if flt.calling_aet is not None:
        conditions.append(Study.calling_aet == flt.calling_aet)
    if flt.delivered is not None:
        conditions.append(_delivered_clause() if flt.delivered else ~_delivered_clause())
    if flt.assessed is not None:
        conditions.append(Prediction.assessed.is_(flt.assessed))
    return query.where(*conditions) if conditions else query


def _base(columns: list[Any]) -> Select[Any]:
    return (
        select(*columns)
        .select_from(Study)
        .outerjoin(Prediction, Prediction.id == _latest_deployed_id())
    )


_LIST_COLUMNS = [
    Study.id,
    Study.study_instance_uid,
    Study.accession_number,
    Study.study_description,
    Study.calling_aet,
    Study.modality,
    Study.state,
    Study.version,
    Study.first_received_at,
    Study.last_received_at,
    Prediction.id.label("prediction_id"),
    Prediction.study_version.label("prediction_version"),
    Prediction.priority,
    Prediction.probabilities,
    Prediction.flags,
    Prediction.assessed,
    Prediction.in_domain,
    Prediction.reasons,
    Prediction.bundle_name,
    Prediction.bundle_version,
    Prediction.bundle_sha256,
    Prediction.synthetic_demo,
    Prediction.created_at.label("predicted_at"),
]


def list_studies(
    session: Session,
    flt: StudyFilter,
    *,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of studies, most pressing first, and the total matching ``flt``.

    Two steps so that the sort over every study handles narrow rows only: the page's ids
    in rank order, then the page's columns for those ids alone. The per-slice scores are
    not read here (they are the largest JSON): see :func:`slice_scores_of`.
    """
    # The result's columns are joined only when a filter needs them.
    joined = _needs_prediction(flt)
    ids = _base([Study.id]) if joined else select(Study.id)
    counted = _base([func.count(Study.id)]) if joined else select(func.count(Study.id))
    page_ids = list(
        session.scalars(
            _filtered(ids, flt)
            .order_by(_rank(), Study.first_received_at, Study.id)
            .limit(limit)
            .offset(offset)
        )
    )
    total = int(session.scalar(_filtered(counted, flt)) or 0)
    if not page_ids:
        return [], total
    columns = [*_LIST_COLUMNS, _delivered_clause().label("delivered")]
    by_id = {row.id: row for row in session.execute(_base(columns).where(Study.id.in_(page_ids)))}
    acks = _acknowledgements(session, [(by_id[i].id, by_id[i].version) for i in page_ids])
    items = []
    for study_id in page_ids:
        row = by_id[study_id]
        item = dict(row._mapping)
        item["acknowledged_by"] = acks.get((row.id, row.version), [])
        items.append(item)
    return items, total


def slice_scores_of(session: Session, prediction_ids: list[int]) -> dict[int, list[Any]]:
    """Prediction id -> its per-slice scores, for the given predictions (never changed
    once stored, so a caller may keep them)."""
    if not prediction_ids:
        return {}
    rows = session.execute(
        select(Prediction.id, Prediction.slice_scores).where(Prediction.id.in_(prediction_ids))
    )
    return {pid: scores or [] for pid, scores in rows}


def _acknowledgements(
    session: Session, keys: list[tuple[int, int]]
) -> dict[tuple[int, int], list[str]]:
    """(study id, version) -> names of those who acknowledged it, for the given studies."""
    if not keys:
        return {}
    rows = session.execute(
        select(Acknowledgement.study_id, Acknowledgement.study_version, WebUser.name)
        .join(WebUser, WebUser.id == Acknowledgement.user_id)
        .where(Acknowledgement.study_id.in_([study_id for study_id, _ in keys]))
        .order_by(Acknowledgement.at)
    ).all()
    wanted = set(keys)
    found: dict[tuple[int, int], list[str]] = {}
    for study_id, version, name in rows:
        if (study_id, version) in wanted:
            found.setdefault((study_id, version), []).append(name)
    return found


def _prediction_dict(p: Prediction) -> dict[str, Any]:
    return {
        "id": p.id,
        "study_version": p.study_version,
        "series_instance_uid": p.series_instance_uid,
        "bundle_name": p.bundle_name,
        "bundle_version": p.bundle_version,
        "bundle_sha256": p.bundle_sha256,
        "synthetic_demo": p.synthetic_demo,
        "shadow": p.shadow,
        "priority": p.priority,
        "probabilities": p.probabilities,
        "flags": p.flags,
        "thresholds": p.thresholds,
        "slice_scores": p.slice_scores,
        "timings": p.timings,
        "assessed": p.assessed,
        "in_domain": p.in_domain,
        "domain_score": p.domain_score,
        "reasons": list(p.reasons or []),
        "created_at": p.created_at,
    }


def study_detail(session: Session, study_id: int) -> dict[str, Any] | None:
    """Everything the study view shows: results (deployed and shadow), series, deliveries."""
    study = session.get(Study, study_id)
    if study is None:
        return None
    predictions = session.scalars(
        select(Prediction).where(Prediction.study_id == study_id).order_by(Prediction.id.desc())
    ).all()
    deployed = next((p for p in predictions if not p.shadow), None)
    shadows = [
        p
        for p in predictions
        if p.shadow and (deployed is None or p.study_version == deployed.study_version)
    ]
    series = session.execute(
        select(Series, func.count(Instance.id))
        .outerjoin(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study_id)
        .group_by(Series.id)
        .order_by(Series.series_number, Series.id)
    ).all()
    deliveries = session.scalars(
        select(Delivery)
        .join(Prediction, Prediction.id == Delivery.prediction_id)
        .where(Prediction.study_id == study_id)
        .order_by(Delivery.id)
    ).all()
    acks = _acknowledgements(session, [(study.id, study.version)])
    read_uid = deployed.series_instance_uid if deployed else None
    return {
        "id": study.id,
        "study_instance_uid": study.study_instance_uid,
        "accession_number": study.accession_number,
        "study_description": study.study_description,
        "calling_aet": study.calling_aet,
        "modality": study.modality,
        "state": study.state,
        "state_reason": study.state_reason,
        "version": study.version,
        "first_received_at": study.first_received_at,
        "last_received_at": study.last_received_at,
        "completed_at": study.completed_at,
        "result": _prediction_dict(deployed) if deployed else None,
        "shadow_results": [_prediction_dict(p) for p in shadows],
        "series": [
            {
                "series_instance_uid": s.series_instance_uid,
                "series_number": s.series_number,
                "series_description": s.series_description,
                "modality": s.modality,
                "instances": int(count),
                "read": s.series_instance_uid == read_uid,
            }
            for s, count in series
        ],
        "deliveries": [
            {
                "channel": d.channel,
                "destination": d.destination,
                "state": d.state,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "created_at": d.created_at,
                "delivered_at": d.acknowledged_at,
            }
            for d in deliveries
        ],
        "acknowledged_by": acks.get((study.id, study.version), []),
    }


def study_uid(session: Session, study_id: int) -> tuple[str, int] | None:
    """(Study Instance UID, current version) of a study id, or None if unknown."""
    row = session.execute(
        select(Study.study_instance_uid, Study.version).where(Study.id == study_id)
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def acknowledge(session: Session, study_id: int, version: int, user_id: int) -> bool:
    """Record that a user saw this study version's result; False if they already had."""
    found = session.scalar(
        select(Acknowledgement.id).where(
            Acknowledgement.study_id == study_id,
            Acknowledgement.study_version == version,
            Acknowledgement.user_id == user_id,
        )
    )
    if found is not None:
        return False
    session.add(Acknowledgement(study_id=study_id, study_version=version, user_id=user_id))
    return True


def change_marker(session: Session) -> str:
    """A cheap fingerprint that changes when a study arrives, is predicted, delivered or
    acknowledged: the live worklist polls it and reloads its rows only when it moves."""
    parts = session.execute(
        select(
            select(func.max(Study.updated_at)).scalar_subquery(),
            select(func.count(Study.id)).scalar_subquery(),
            select(func.max(Prediction.id)).scalar_subquery(),
            select(func.max(Delivery.id)).scalar_subquery(),
            select(func.max(Delivery.acknowledged_at)).scalar_subquery(),
            select(func.max(Acknowledgement.id)).scalar_subquery(),
        )
    ).one()
    return "|".join("" if part is None else str(part) for part in parts)


def bundles_seen(session: Session) -> list[dict[str, Any]]:
    """Every model bundle that made a stored result: how often, first and last time."""
    rows = session.execute(
        select(
            Prediction.bundle_name,
            Prediction.bundle_version,
            Prediction.bundle_sha256,
            Prediction.synthetic_demo,
            Prediction.shadow,
            func.count(Prediction.id),
            func.min(Prediction.created_at),
            func.max(Prediction.created_at),
        )
        .group_by(
            Prediction.bundle_name,
            Prediction.bundle_version,
            Prediction.bundle_sha256,
            Prediction.synthetic_demo,
            Prediction.shadow,
        )
        .order_by(func.max(Prediction.created_at).desc())
    ).all()
    return [
        {
            "bundle_name": name,
            "bundle_version": version,
            "bundle_sha256": sha,
            "synthetic_demo": bool(demo),
            "shadow": bool(shadow),
            "predictions": int(count),
            "first_seen": first,
            "last_seen": last,
        }
        for name, version, sha, demo, shadow, count, first, last in rows
    ]


def database_ready(session: Session) -> bool:
    """Whether the database answers a trivial query (readiness)."""
    return session.scalar(select(func.count(Study.id))) is not None
