"""Migrations: idempotent, and the migrated schema is exactly what the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from db.migrate import alembic_config, upgrade_to_head
from db.models import Base


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_upgrade_is_idempotent_and_reaches_head(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    upgrade_to_head(url)
    upgrade_to_head(url)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head
    tables = set(inspect(engine).get_table_names())
    assert {"studies", "series", "instances", "jobs", "predictions", "audit_events"} <= tables
