"""Shared fixtures: a real database of each kind, settings, and polling with a deadline.

Every database a test touches is its own: a fresh SQLite file under ``tmp_path`` or a
``CREATE DATABASE t_<random>`` on the local PostgreSQL server, dropped afterwards, with
the migrations applied exactly as the services apply them at start.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from db.migrate import upgrade_to_head
from triage.settings import Settings, load_settings

POSTGRES_ADMIN_URL = os.environ.get(
    "TRIAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _no_ambient_triage_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test alone, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("TRIAGE_") and name != "TRIAGE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


def create_postgres_database(template: str | None = None) -> str:
    """Create a database on the local server (a copy of ``template`` if given); its URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    finally:
        admin.dispose()
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by :func:`create_postgres_database`, closing its sessions.

    Retried briefly: a listener being stopped in the background may still reconnect once.
    """
    name = make_url(url).database
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(10):
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                return
            except OperationalError:
                if attempt == 9:
                    raise
                time.sleep(0.2)
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Migrated empty databases made once per session, copied for each test (fast)."""
    made: dict[str, Any] = {}

    def sqlite_file() -> Path:
        if "sqlite" not in made:
            path = tmp_path_factory.mktemp("template") / "triage.sqlite"
            upgrade_to_head(f"sqlite:///{path.as_posix()}")
            made["sqlite"] = path
        return made["sqlite"]

    def postgres_name() -> str:
        if "postgres" not in made:
            url = create_postgres_database()
            upgrade_to_head(url)
            made["postgres"] = url
        return str(make_url(made["postgres"]).database)

    yield {"sqlite": sqlite_file, "postgres": postgres_name}
    if "postgres" in made:
        drop_postgres_database(made["postgres"])


@pytest.fixture(scope="session")
def new_postgres_database() -> Iterator[Callable[[], str]]:
    """``new_postgres_database()`` creates an empty database; all are dropped at session end."""
    made: list[str] = []

    def create() -> str:
        made.append(create_postgres_database())
        return made[-1]

    yield create
    for url in made:
        drop_postgres_database(url)


DATABASE_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=DATABASE_KINDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_templates: dict[str, Any]
) -> Iterator[str]:
    """A fresh, migrated database of each kind (the test runs once per kind)."""
    if request.param == "sqlite":
        path = tmp_path / "triage.sqlite"
        shutil.copyfile(migrated_templates["sqlite"](), path)
        yield f"sqlite:///{path.as_posix()}"
        return
    url = create_postgres_database(template=migrated_templates["postgres"]())
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build settings rooted in ``tmp_path``; keyword arguments override any field."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "var_dir": tmp_path / "var",
            "spool_dir": tmp_path / "var" / "spool",
            "quarantine_dir": tmp_path / "var" / "quarantine",
            "stable_seconds": 60.0,
            "quiet_seconds": 0.2,
            "spool_fsync": False,
        }
        values.update(overrides)
        return load_settings(**values)

    return build


def wait_for(
    probe: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or probe!r}")
        time.sleep(interval)


@pytest.fixture
def poll() -> Callable[..., Any]:
    """:func:`wait_for` as a fixture, so test modules need not import from conftest."""
    return wait_for
