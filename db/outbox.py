"""The delivery outbox: every query that enqueues, claims, settles and lists deliveries.

Exactly once toward each destination rests on three rules kept here:

* rows are added in the prediction's own transaction (:func:`enqueue`), keyed by
  (prediction, channel, destination), so a result is never stored without its deliveries
  and a redelivered task never queues them twice;
* a sender claims a due row (:func:`claim_due`) by a compare-and-set on its state and
  attempt count, after ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the claim leases the row
  (``sending`` until ``next_attempt_at``), so a sender that dies mid-send leaves a row that
  is due again when its lease runs out, while a live one is never sent twice at once;
* an acknowledgement is committed on its own right after it arrives (:func:`mark_sent`),
  and a ``sent`` row is never claimed again. The send between the ACK and that commit is
  the only one a crash can repeat, and every channel makes the repeat harmless
  (deterministic SOP Instance UIDs, message control ids and delivery ids).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.audit import record_event
from db.models import Delivery, Prediction, Study, utcnow
from db.study_states import allowed, transition
from db.vocabulary import AuditEventType, DeliveryState, StudyState

S = DeliveryState
DUE_STATES = (S.PENDING, S.RETRYING, S.SENDING)  # SENDING only once its lease ran out
ACTOR = "delivery"


@dataclass(frozen=True)
class Target:
    """One destination a prediction must reach: its channel and its normalised key."""

    channel: str
    destination: str


def delivery_key(prediction_id: int, channel: str, destination: str) -> str:
    """A stable id for one delivery (hex): webhook delivery id and HL7 message control id.

    Derived from the row's unique key, so every re-send of the same delivery carries the
    same id and the receiver can drop repeats.
    """
    digest = hashlib.sha256(f"{prediction_id}|{channel}|{destination}".encode())
    return digest.hexdigest()[:32]


def enqueue(
    session: Session,
    prediction: Prediction,
    targets: Iterable[Target],
    *,
    result_dir: str | None,
    document_uids: dict[str, Any],
) -> list[Delivery]:
    """Add one pending delivery per target for ``prediction`` (the caller commits).

    Call it in the transaction that stores the prediction. A target already queued for the
    prediction is kept as it is (a redelivered task adds nothing).
    """
    if prediction.id is None:
        session.flush()
    rows: list[Delivery] = []
    for target in targets:
        row = Delivery(
            prediction_id=prediction.id,
            channel=target.channel,
            destination=target.destination,
            state=S.PENDING,
            attempts=0,
            next_attempt_at=utcnow(),
            result_dir=result_dir,
            document_uids=document_uids,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            continue
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Claim:
    """A delivery this sender now holds, with what it needs to send it."""

    delivery_id: int
    attempt: int
    channel: str
    destination: str


def _due(now: datetime, ids: Sequence[int] | None) -> Any:
    query = select(Delivery.id, Delivery.state, Delivery.attempts).where(
        Delivery.state.in_(DUE_STATES), Delivery.next_attempt_at <= now
    )
    if ids is not None:
        query = query.where(Delivery.id.in_(ids))
    return query.order_by(Delivery.next_attempt_at, Delivery.id)


def claim_due(
    session: Session,
    *,
    lease: timedelta,
    limit: int = 10,
    ids: Sequence[int] | None = None,
    now: datetime | None = None,
) -> list[Claim]:
    """Claim up to ``limit`` due deliveries (oldest first) and commit the claim.

    Each claim counts one attempt and leases the row for ``lease``: a sender that dies
    loses the row back to the outbox when the lease ends. ``ids`` restricts the claim to
    those rows (a wake-up message names its delivery).
    """
    now = now or utcnow()
    query = _due(now, ids).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Delivery)
    claims: list[Claim] = []
    for delivery_id, state, attempts in session.execute(query).all():
        # Compare-and-set: on SQLite (no row locks) two senders may read the same row, and
        # only the one whose update still finds it as read gets it.
        won = cast(
            CursorResult[Any],
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.state == state,
                    Delivery.attempts == attempts,
                )
                .values(
                    state=S.SENDING,
                    attempts=attempts + 1,
                    next_attempt_at=now + lease,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        if won:
            row = session.get(Delivery, delivery_id)
            assert row is not None
            claims.append(Claim(delivery_id, attempts + 1, row.channel, row.destination))
    session.commit()
    return claims


@dataclass(frozen=True)
class DeliveryContext:
    """What a sender needs about a claimed delivery: the result and the study it is for."""

    delivery_id: int
    key: str
    channel: str
    destination: str
    attempt: int
    result_dir: str | None
    document_uids: dict[str, Any]
    study_instance_uid: str
    accession_number: str | None
    patient_id: str | None
    study_version: int
    prediction: dict[str, Any]
    correction: bool  # an earlier version's result already reached this destination


def context(session: Session, delivery_id: int) -> DeliveryContext:
    """Everything about delivery ``delivery_id`` a sender puts in its message.

    Raises
    ------
    LookupError
        When the delivery (or its prediction) no longer exists.
    """
    row = session.get(Delivery, delivery_id)
    if row is None:
        raise LookupError(f"delivery {delivery_id} does not exist")
    prediction = session.get(Prediction, row.prediction_id)
    study = session.get(Study, prediction.study_id) if prediction is not None else None
    if prediction is None or study is None:
        raise LookupError(f"delivery {delivery_id} has lost its prediction")
    earlier_sent = session.scalar(
        select(Delivery.id)
        .join(Prediction, Prediction.id == Delivery.prediction_id)
        .where(
            Prediction.study_id == study.id,
            Prediction.study_version < prediction.study_version,
            Prediction.shadow.is_(False),
            Delivery.channel == row.channel,
            Delivery.destination == row.destination,
            Delivery.state == S.SENT,
        )
        .limit(1)
    )
    return DeliveryContext(
        delivery_id=row.id,
        key=delivery_key(row.prediction_id, row.channel, row.destination),
        channel=row.channel,
        destination=row.destination,
        attempt=row.attempts,
        result_dir=row.result_dir,
        document_uids=dict(row.document_uids or {}),
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        patient_id=study.patient_id,
        study_version=prediction.study_version,
        prediction={
            "id": prediction.id,
            "priority": str(prediction.priority),
            "probabilities": dict(prediction.probabilities),
            "flags": dict(prediction.flags),
            "thresholds": dict(prediction.thresholds),
            "assessed": prediction.assessed,
            "reasons": list(prediction.reasons or []),
            "bundle_name": prediction.bundle_name,
            "bundle_version": prediction.bundle_version,
            "bundle_sha256": prediction.bundle_sha256,
            "synthetic_demo": prediction.synthetic_demo,
            "series_instance_uid": prediction.series_instance_uid,
            "created_at": prediction.created_at.isoformat(),
        },
        correction=earlier_sent is not None,
    )


def mark_sent(session: Session, delivery_id: int, *, detail: dict[str, Any] | None = None) -> bool:
    """Record the destination's acknowledgement and commit at once.

    Moves the study to ``delivered`` when every delivery of its current result is sent.
    Returns whether the study moved.
    """
    row = session.get(Delivery, delivery_id)
    if row is None or row.state == S.SENT:  # a second sender after an expired lease
        session.rollback()
        return False
    row.state = S.SENT
    row.acknowledged_at = utcnow()
    row.last_error = None
    prediction = session.get(Prediction, row.prediction_id)
    assert prediction is not None
    study = session.get(Study, prediction.study_id)
    assert study is not None
    record_event(
        session,
        AuditEventType.RESULT_DELIVERED,
        actor=ACTOR,
        study_instance_uid=study.study_instance_uid,
        detail={
            "delivery_id": row.id,
            "channel": row.channel,
            "destination": row.destination,
            "version": prediction.study_version,
            "attempts": row.attempts,
            **({"sent": detail} if detail else {}),
        },
    )
    session.flush()
    moved = False
    outstanding = session.scalar(
        select(Delivery.id)
        .where(Delivery.prediction_id == prediction.id, Delivery.state != S.SENT)
        .limit(1)
    )
    if (
        outstanding is None
        and study.version == prediction.study_version
        and study.state == StudyState.PREDICTED
        and allowed(study.state, StudyState.DELIVERED)
    ):
        transition(session, study, StudyState.DELIVERED, "every destination acknowledged")
        moved = True
    session.commit()
    return moved


def mark_failed(
    session: Session,
    delivery_id: int,
    *,
    attempt: int,
    error: str,
    retry_at: datetime | None,
) -> DeliveryState | None:
    """Record a failed attempt: ``retrying`` until ``retry_at``, or ``dead`` when it is None.

    Only the sender holding attempt ``attempt`` settles the row (a later claim after an
    expired lease owns it then). Commits. Returns the new state, or None if not ours.
    """
    row = session.get(Delivery, delivery_id)
    if row is None or row.state != S.SENDING or row.attempts != attempt:
        session.rollback()
        return None
    row.last_error = error[:2000]
    if retry_at is None:
        row.state = S.DEAD
        prediction = session.get(Prediction, row.prediction_id)
        study = session.get(Study, prediction.study_id) if prediction else None
        record_event(
            session,
            AuditEventType.DELIVERY_FAILED,
            actor=ACTOR,
            study_instance_uid=study.study_instance_uid if study else None,
            detail={
                "delivery_id": row.id,
                "channel": row.channel,
                "destination": row.destination,
                "attempts": row.attempts,
                "reason": error[:500],
            },
        )
    else:
        row.state = S.RETRYING
        row.next_attempt_at = retry_at
    new_state = row.state
    session.commit()
    return new_state


def requeue_dead(
    session: Session, *, ids: Sequence[int] | None = None, actor: str = ACTOR
) -> list[int]:
    """Put dead deliveries (all, or those in ``ids``) back in the outbox with fresh attempts.

    Commits; returns the ids re-queued. A row that is not dead is left alone.
    """
    query = select(Delivery).where(Delivery.state == S.DEAD)
    if ids is not None:
        query = query.where(Delivery.id.in_(ids))
    requeued: list[int] = []
    for row in session.scalars(query.order_by(Delivery.id)).all():
        row.state = S.RETRYING
        row.attempts = 0
        row.next_attempt_at = utcnow()
        requeued.append(row.id)
        record_event(
            session,
            AuditEventType.DELIVERY_REQUEUED,
            actor=actor,
            detail={"delivery_id": row.id, "channel": row.channel, "destination": row.destination},
        )
    session.commit()
    return requeued


def deliveries(session: Session, *, state: DeliveryState | None = None) -> list[dict[str, Any]]:
    """Every delivery with its study, state, attempts, last error and next attempt, for audit."""
    query = (
        select(Delivery, Prediction, Study)
        .join(Prediction, Prediction.id == Delivery.prediction_id)
        .join(Study, Study.id == Prediction.study_id)
    )
    if state is not None:
        query = query.where(Delivery.state == state)
    rows = session.execute(query.order_by(Delivery.id)).all()
    return [
        {
            "id": d.id,
            "study_instance_uid": study.study_instance_uid,
            "study_version": p.study_version,
            "priority": str(p.priority),
            "channel": d.channel,
            "destination": d.destination,
            "state": d.state.value,
            "attempts": d.attempts,
            "last_error": d.last_error,
            "next_attempt_at": (
                d.next_attempt_at.isoformat()
                if d.state in (S.PENDING, S.RETRYING, S.SENDING)
                else None
            ),
            "acknowledged_at": d.acknowledged_at.isoformat() if d.acknowledged_at else None,
            "document_uids": d.document_uids,
            "created_at": d.created_at.isoformat(),
        }
        for d, p, study in rows
    ]


def earlier_documents(session: Session, study_id: int, before_version: int) -> dict[str, Any]:
    """The document UIDs of the newest earlier version's result that was queued for delivery.

    A new version's SR names that SR as its predecessor; empty when there was none.
    """
    row = session.execute(
        select(Delivery.document_uids)
        .join(Prediction, Prediction.id == Delivery.prediction_id)
        .where(
            Prediction.study_id == study_id,
            Prediction.study_version < before_version,
            Prediction.shadow.is_(False),
        )
        .order_by(Prediction.study_version.desc(), Delivery.id)
        .limit(1)
    ).first()
    return dict(row[0]) if row and row[0] else {}
