"""A migrated database of each kind per session, and a rolled-back session per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db.engine import make_engine
from db.migrate import upgrade_to_head


@pytest.fixture(scope="session")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    url = f"sqlite:///{(tmp_path_factory.mktemp('db') / 'triage.sqlite').as_posix()}"
    upgrade_to_head(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_engine(new_postgres_database: Callable[[], str]) -> Iterator[Engine]:
    url = new_postgres_database()
    upgrade_to_head(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def engine(request: pytest.FixtureRequest) -> Engine:
    """The session-wide migrated engine of each kind (the test runs once per kind)."""
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session inside an outer transaction that is rolled back after the test."""
    connection = engine.connect()
    outer = connection.begin()
    db_session = Session(bind=connection, expire_on_commit=False)
    try:
        yield db_session
    finally:
        db_session.close()
        if outer.is_active:  # a failed flush has already rolled it back
            outer.rollback()
        connection.close()
