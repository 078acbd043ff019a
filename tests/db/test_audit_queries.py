"""The auditors' questions answered from stored rows (both databases)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from db.audit_queries import (
    findings,
    latency_per_day,
    never_delivered,
    not_assessed,
    percentile,
    positive_rate,
    shadow_agreement,
)
from db.models import utcnow
from db.vocabulary import Priority
from tests.web.seed import CLASSES, add_study


def _probs(**high: float) -> dict[str, float]:
    return {**dict.fromkeys(CLASSES, 0.05), **high}


def test_findings_at_or_above_a_probability_by_bundle(session: Session) -> None:
    now = utcnow()
    hit = add_study(session, priority=Priority.CRITICAL, probabilities=_probs(any=0.8))
    add_study(session, priority=Priority.ROUTINE, probabilities=_probs(any=0.3))
    old = add_study(
        session, received=now - timedelta(days=10), priority=Priority.CRITICAL,
        probabilities=_probs(any=0.9),
    )  # fmt: skip
    week = findings(session, finding="any", min_probability=0.5, since=now - timedelta(days=7))
    assert [r["study_instance_uid"] for r in week] == [hit.study_instance_uid]
    assert week[0]["probability"] == 0.8 and week[0]["flagged"] is True
    everything = findings(session, finding="any", min_probability=0.5)
    assert {r["study_instance_uid"] for r in everything} == {
        hit.study_instance_uid, old.study_instance_uid
    }  # fmt: skip
    assert findings(session, finding="any", min_probability=0.5, bundle="9.9.9") == []
    by_sha = findings(session, finding="any", min_probability=0.5, bundle="abababab")
    assert len(by_sha) == 2


def test_never_delivered_and_not_assessed_say_why(session: Session) -> None:
    delivered = add_study(session, priority=Priority.URGENT, delivered_after_s=5)
    waiting = add_study(session, priority=Priority.URGENT)
    refused = add_study(
        session, priority=Priority.NOT_ASSESSED, assessed=False, in_domain=True,
        reasons=["slice thickness 10 mm outside 0.5-5 mm"],
    )  # fmt: skip
    undelivered = {r["study_instance_uid"] for r in never_delivered(session)}
    assert delivered.study_instance_uid not in undelivered
    assert {waiting.study_instance_uid, refused.study_instance_uid} <= undelivered
    row = next(
        r for r in never_delivered(session) if r["study_instance_uid"] == waiting.study_instance_uid
    )
    assert row["deliveries"] == "none attempted" and row["priority"] == "urgent"
    unassessed = not_assessed(session)
    assert [(r["study_instance_uid"], r["kind"], r["reasons"]) for r in unassessed] == [
        (refused.study_instance_uid, "not assessed", "slice thickness 10 mm outside 0.5-5 mm")
    ]


def test_latency_per_day_mean_and_p95(session: Session) -> None:
    day = utcnow().replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    for i, delivered in enumerate((10.0, 20.0, None)):
        add_study(
            session, received=day + timedelta(minutes=i), priority=Priority.ROUTINE,
            delivered_after_s=delivered,
        )  # fmt: skip
    rows = latency_per_day(session)
    assert rows == [
        {
            "day": day.date().isoformat(), "results": 3, "to_result_mean_s": 3.0,
            "to_result_p95_s": 3.0, "delivered": 2, "to_delivered_mean_s": 15.0,
            "to_delivered_p95_s": 20.0,
        }
    ]  # fmt: skip
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == 10
    assert percentile([5.0], 95) == 5.0


def test_shadow_agreement_and_positive_rate_per_scanner_week(session: Session) -> None:
    add_study(session, priority=Priority.CRITICAL, probabilities=_probs(any=0.9),
              shadow_priority=Priority.CRITICAL, calling_aet="CT1")  # fmt: skip
    add_study(session, priority=Priority.ROUTINE, shadow_priority=Priority.URGENT,
              calling_aet="CT1")  # fmt: skip
    add_study(session, priority=Priority.ROUTINE, calling_aet="CT2")
    agreement = shadow_agreement(session)
    assert len(agreement) == 1
    assert agreement[0]["pairs"] == 2 and agreement[0]["priority_agreement"] == 0.5
    assert agreement[0]["agreement_any"] == 1.0  # same flags in the seeded pairs
    rates = {r["calling_aet"]: r for r in positive_rate(session)}
    assert rates["CT1"]["assessed"] == 2 and rates["CT1"]["positive"] == 1
    assert rates["CT1"]["positive_rate"] == 0.5
    assert rates["CT2"]["positive_rate"] == 0.0
    assert rates["CT1"]["week"].startswith(str(utcnow().isocalendar()[0]))
