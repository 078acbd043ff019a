"""The study state machine, walked move by move on real database rows."""

from __future__ import annotations

from itertools import product

import pytest
from sqlalchemy.orm import Session

from db import queries
from db.models import Study
from db.study_states import ALLOWED, INITIAL_STATE, IllegalTransition, allowed, transition
from db.vocabulary import StudyState

MOVES = list(product(StudyState, StudyState))
LEGAL = [(a, b) for a, b in MOVES if b in ALLOWED[a]]
ILLEGAL = [(a, b) for a, b in MOVES if b not in ALLOWED[a]]


def _ids(move: tuple[StudyState, StudyState]) -> str:
    return f"{move[0].value}->{move[1].value}"


def add_study(session: Session, uid: str, state: StudyState) -> Study:
    study = Study(study_instance_uid=uid, state=state)
    session.add(study)
    session.flush()
    return study


def test_table_covers_every_state_and_names_only_states() -> None:
    assert set(ALLOWED) == set(StudyState)
    for targets in ALLOWED.values():
        assert targets <= set(StudyState)


def test_every_state_is_reachable_from_the_initial_state() -> None:
    seen, frontier = {INITIAL_STATE}, [INITIAL_STATE]
    while frontier:
        for target in ALLOWED[frontier.pop()] - seen:
            seen.add(target)
            frontier.append(target)
    assert seen == set(StudyState)


def test_late_images_reopen_every_study_that_is_not_receiving() -> None:
    for state in StudyState:
        assert allowed(state, StudyState.RECEIVING) is (state is not StudyState.RECEIVING)


@pytest.mark.parametrize("move", LEGAL, ids=_ids)
def test_allowed_move_is_stored_with_its_reason_and_time(
    session: Session, move: tuple[StudyState, StudyState]
) -> None:
    start, target = move
    study = add_study(session, "1.2.3", start)
    before = study.updated_at

    transition(session, study, target, f"to {target.value}")
    session.flush()
    session.expire_all()

    again = queries.find_study(session, "1.2.3")
    assert again is not None
    assert again.state is target
    assert again.state_reason == f"to {target.value}"
    assert again.updated_at >= before


@pytest.mark.parametrize("move", ILLEGAL, ids=_ids)
def test_move_outside_the_table_raises_and_changes_nothing(
    session: Session, move: tuple[StudyState, StudyState]
) -> None:
    start, target = move
    study = add_study(session, "1.2.4", start)

    with pytest.raises(IllegalTransition) as raised:
        transition(session, study, target, "never stored")

    message = str(raised.value)
    assert "1.2.4" in message and repr(start.value) in message and repr(target.value) in message
    assert (raised.value.from_state, raised.value.to_state) == (start, target)
    session.flush()
    session.expire_all()
    again = queries.find_study(session, "1.2.4")
    assert again is not None and again.state is start and again.state_reason is None
