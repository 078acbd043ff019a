"""The study state machine: which moves are allowed, and the one function that makes them.

Every change of ``Study.state`` goes through :func:`transition` (or, for a conditional bulk
update in ``db.queries``, through :func:`require_move`), so the table below is the whole
truth about how a study may move; a move not in it raises :class:`IllegalTransition`
instead of silently corrupting the lifecycle.

The table is what the services did before it existed, written down:

* the listener completes a receiving study, ignores it when routing declines it, marks it
  queued after a dispatch, and reopens any study except one still receiving when late
  images arrive (the new version is completed and predicted in turn);
* the worker starts any dispatched study (a redelivery or a re-run under a new bundle
  included), stores its prediction, or fails it;
* the reconciler re-queues complete, queued and stuck processing studies;
* the delivery outbox moves a predicted study to delivered.

Same-state moves are listed where they are real (a re-queue of a queued study, a
redelivered attempt, a failure reported twice) and refused elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session

from db.models import Study, utcnow
from db.vocabulary import StudyState

S = StudyState

INITIAL_STATE = S.RECEIVING

ALLOWED: Mapping[StudyState, frozenset[StudyState]] = {
    S.RECEIVING: frozenset({S.COMPLETE}),
    S.COMPLETE: frozenset({S.RECEIVING, S.IGNORED, S.QUEUED, S.PROCESSING, S.PREDICTED, S.FAILED}),
    S.QUEUED: frozenset({S.RECEIVING, S.QUEUED, S.PROCESSING, S.PREDICTED, S.FAILED}),
    S.PROCESSING: frozenset({S.RECEIVING, S.QUEUED, S.PROCESSING, S.PREDICTED, S.FAILED}),
    S.PREDICTED: frozenset({S.RECEIVING, S.DELIVERED, S.PROCESSING, S.FAILED}),
    S.DELIVERED: frozenset({S.RECEIVING, S.PROCESSING, S.FAILED}),
    S.FAILED: frozenset({S.RECEIVING, S.PROCESSING, S.PREDICTED, S.FAILED}),
    S.IGNORED: frozenset({S.RECEIVING}),
}


class IllegalTransition(ValueError):
    """A study was asked to make a move the state table does not allow."""

    def __init__(self, study: str, from_state: StudyState, to_state: StudyState) -> None:
        super().__init__(
            f"study {study} cannot move from {from_state.value!r} to {to_state.value!r}"
        )
        self.study = study
        self.from_state = from_state
        self.to_state = to_state


def allowed(from_state: StudyState, to_state: StudyState) -> bool:
    """Whether the table allows ``from_state -> to_state``; for callers that skip a race."""
    return to_state in ALLOWED[from_state]


def require_move(study: str, from_state: StudyState, to_state: StudyState) -> None:
    """Raise :class:`IllegalTransition` unless the move is in the table.

    ``study`` names the study in the error (its UID, or its row id where only that is known).
    """
    if not allowed(from_state, to_state):
        raise IllegalTransition(study, from_state, to_state)


def transition(
    session: Session, study: Study, to_state: StudyState, reason: str | None = None
) -> None:
    """Move ``study`` to ``to_state``, recording why and when (the caller commits).

    ``session`` is the unit of work the move belongs to, so every move is a ``db`` call
    made inside the caller's transaction (and can be audited from one place later).

    Raises
    ------
    IllegalTransition
        When the table does not allow the move; the study is left unchanged.
    """
    require_move(study.study_instance_uid, study.state, to_state)
    study.state = to_state
    study.state_reason = reason
    study.updated_at = utcnow()
