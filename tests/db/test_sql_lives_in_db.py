"""All SQL lives in ``db``: the listener and worker call query functions, never build statements.

Checked on the source with ``ast``, so a new ``select`` in a handler fails here before review.
Session types and SQLAlchemy's exceptions stay allowed: they name a unit of work or a
failure, not a query.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATEMENT_BUILDERS = {
    "select", "insert", "update", "delete", "bindparam", "text", "func", "literal",
    "literal_column", "column", "table", "and_", "or_", "not_", "exists", "union", "join",
    "outerjoin", "case", "cast", "values", "tuple_", "true", "false", "null",
}  # fmt: skip
ORM_QUERY_BUILDERS = {"aliased", "join", "outerjoin"}
STATEMENT_MODULES = ("sqlalchemy.sql", "sqlalchemy.dialects", "sqlalchemy.future")
SOURCES = sorted([*(ROOT / "listener").rglob("*.py"), *(ROOT / "worker").rglob("*.py")])


def _builds_sql(module: str, name: str | None) -> bool:
    """Whether importing ``name`` from ``module`` (or ``module`` itself) can build SQL."""
    if module == "sqlalchemy":
        return name is None or name in STATEMENT_BUILDERS  # plain import reaches them all
    if module == "sqlalchemy.orm":
        return name in ORM_QUERY_BUILDERS
    return module.startswith(STATEMENT_MODULES)


def statement_imports(source: str, filename: str = "<source>") -> list[str]:
    """Every import in ``source`` that brings a SQL statement builder into scope."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _builds_sql(a.name, None)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [
                f"{node.module}.{a.name}" for a in node.names if _builds_sql(node.module, a.name)
            ]
    return found


def test_the_check_sees_every_way_of_importing_a_statement_builder() -> None:
    source = (
        "import sqlalchemy\n"
        "import sqlalchemy.sql.expression\n"
        "from sqlalchemy import select, bindparam as bp\n"
        "from sqlalchemy.sql import func\n"
        "def f():\n"
        "    from sqlalchemy import update\n"
    )
    assert statement_imports(source) == [
        "sqlalchemy",
        "sqlalchemy.sql.expression",
        "sqlalchemy.select",
        "sqlalchemy.bindparam",
        "sqlalchemy.sql.func",
        "sqlalchemy.update",
    ]
    allowed = (
        "from sqlalchemy.orm import Session, sessionmaker\n"
        "from sqlalchemy.exc import IntegrityError, OperationalError\n"
    )
    assert statement_imports(allowed) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_listener_and_worker_modules_build_no_sql(path: Path) -> None:
    assert statement_imports(path.read_text(), str(path)) == []
