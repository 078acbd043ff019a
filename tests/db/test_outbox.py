"""The outbox queries on both databases: claims never overlap, leases end, only owners settle."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from db import outbox
from db.engine import make_engine, make_session_factory
from db.models import Delivery, Prediction, Study
from db.vocabulary import DeliveryState, Priority, StudyState

S = DeliveryState


def _result(sessions: sessionmaker[Session], targets: int) -> list[int]:
    with sessions() as session:
        study = Study(study_instance_uid="1.2.3.99", state=StudyState.PREDICTED, version=1)
        session.add(study)
        session.flush()
        prediction = Prediction(
            study_id=study.id,
            study_version=1,
            bundle_name="b",
            bundle_version="1",
            bundle_sha256="a" * 64,
            probabilities={},
            flags={},
            thresholds={},
            priority=Priority.ROUTINE,
            slice_scores=[],
            timings={},
        )
        session.add(prediction)
        session.flush()
        rows = outbox.enqueue(
            session,
            prediction,
            [outbox.Target("hl7", f"h:{port}") for port in range(1000, 1000 + targets)],
            result_dir=None,
            document_uids={},
        )
        # queued twice (a redelivered task): nothing more
        assert (
            outbox.enqueue(
                session,
                prediction,
                [outbox.Target("hl7", "h:1000")],
                result_dir=None,
                document_uids={},
            )
            == []
        )
        session.commit()
        return [row.id for row in rows]


def test_concurrent_claimers_never_take_the_same_row(database_url: str) -> None:
    sessions = make_session_factory(make_engine(database_url))
    ids = _result(sessions, 24)
    taken: list[list[int]] = [[], []]

    def claim(slot: int) -> None:
        while True:
            with sessions() as session:
                got = outbox.claim_due(session, lease=timedelta(minutes=5), limit=2)
            if not got:
                return
            taken[slot].extend(c.delivery_id for c in got)

    threads = [threading.Thread(target=claim, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(taken[0] + taken[1]) == sorted(ids)
    assert not set(taken[0]) & set(taken[1])
    with sessions() as session:
        rows = session.query(Delivery).all()
        assert {(r.state, r.attempts) for r in rows} == {(S.SENDING, 1)}


def test_a_lease_that_ran_out_is_claimed_again_and_the_old_owner_cannot_settle(
    database_url: str,
) -> None:
    sessions = make_session_factory(make_engine(database_url))
    [delivery_id] = _result(sessions, 1)
    with sessions() as session:
        [first] = outbox.claim_due(session, lease=timedelta(seconds=-1))
    with sessions() as session:
        [second] = outbox.claim_due(session, lease=timedelta(minutes=5))
        assert outbox.claim_due(session, lease=timedelta(minutes=5)) == []
    assert (first.attempt, second.attempt) == (1, 2)
    with sessions() as session:
        assert (
            outbox.mark_failed(session, delivery_id, attempt=1, error="late", retry_at=None) is None
        )
    with sessions() as session:
        state = outbox.mark_failed(
            session, delivery_id, attempt=2, error="refused 0xA700", retry_at=None
        )
        assert state == S.DEAD
        row = session.get(Delivery, delivery_id)
        assert row is not None and row.last_error == "refused 0xA700"


def test_sent_moves_the_study_when_the_last_destination_acknowledges(database_url: str) -> None:
    sessions = make_session_factory(make_engine(database_url))
    a, b = _result(sessions, 2)
    with sessions() as session:
        outbox.claim_due(session, lease=timedelta(minutes=5))
    with sessions() as session:
        assert outbox.mark_sent(session, a) is False
    with sessions() as session:
        assert outbox.mark_sent(session, b) is True
        assert outbox.mark_sent(session, b) is False  # a second acknowledgement changes nothing
    with sessions() as session:
        assert session.query(Study).one().state == StudyState.DELIVERED
        assert outbox.claim_due(session, lease=timedelta(seconds=-1)) == []


def test_dead_rows_are_requeued_with_fresh_attempts(database_url: str) -> None:
    sessions = make_session_factory(make_engine(database_url))
    a, b = _result(sessions, 2)
    with sessions() as session:
        for claim in outbox.claim_due(session, lease=timedelta(minutes=5)):
            with sessions() as other:
                outbox.mark_failed(other, claim.delivery_id, attempt=1, error="no", retry_at=None)
    with sessions() as session:
        assert outbox.requeue_dead(session, ids=[b]) == [b]
        listed = {row["id"]: row for row in outbox.deliveries(session)}
    assert listed[a]["state"] == "dead" and listed[a]["next_attempt_at"] is None
    assert listed[b]["state"] == "retrying" and listed[b]["attempts"] == 0
    assert listed[b]["last_error"] == "no" and listed[b]["next_attempt_at"] is not None
    with sessions() as session:
        assert [c.delivery_id for c in outbox.claim_due(session, lease=timedelta(minutes=1))] == [b]
