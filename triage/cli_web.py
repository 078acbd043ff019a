"""``triage web``, ``triage users add|list|revoke`` and the auditors' ``triage audit`` queries.

Kept beside :mod:`triage.cli` (which attaches them) so the entry point stays a thin list of
commands; the work is in ``db`` and ``triage.web``.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.orm import Session

from db.audit import record_event
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_to_head
from db.vocabulary import AuditEventType, WebRole
from triage.report_format import FORMATS, render
from triage.settings import Settings, SettingsError, load_settings

TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _session() -> Session:
    url = _settings().database.url.get_secret_value()
    upgrade_to_head(url)
    return make_session_factory(make_engine(url))()


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@click.command()
@click.option("--port", type=int, default=None, help="Overrides TRIAGE_WEB_PORT.")
@click.option("--bind", default=None, help="Overrides TRIAGE_WEB_BIND.")
def web(port: int | None, bind: str | None) -> None:
    """Run the web app: worklist, study API, audit log and metrics (TRIAGE_WEB_PORT)."""
    from triage.web.server import run

    overrides: dict[str, Any] = {}
    if port is not None:
        overrides["web_port"] = port
    if bind is not None:
        overrides["web_bind"] = bind
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    run(settings)


@click.group()
def users() -> None:
    """People and API clients of the web app (tokens are shown once, stored as hashes)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in WebRole]), required=True)
def users_add(name: str, role: str) -> None:
    """Add a user; the token is the LAST line printed and is never shown again."""
    from db.users import UserExists, add_user

    if not name.strip() or len(name) > 64 or not name.isprintable():
        raise click.BadParameter("1-64 printable characters", param_hint="NAME")
    with _session() as session:
        try:
            _, token = add_user(session, name, WebRole(role))
        except UserExists as exc:
            raise click.ClickException(str(exc)) from None
        record_event(
            session, AuditEventType.USER_ADDED, actor=_actor(), detail={"user": name, "role": role}
        )
        session.commit()
    click.echo(f"added {name} as {role}; the token below is shown only now:")
    click.echo(token)


@users.command("list")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")
def users_list(fmt: str) -> None:
    """Every user with role and whether revoked (never a token)."""
    from db.users import list_users

    with _session() as session:
        rows = [
            {
                "name": u.name,
                "role": u.role.value,
                "created_at": u.created_at.isoformat(),
                "revoked_at": u.revoked_at.isoformat() if u.revoked_at else None,
            }
            for u in list_users(session)
        ]
    click.echo(render(rows, fmt))


@users.command("revoke")
@click.argument("name")
def users_revoke(name: str) -> None:
    """Revoke a user's token and end their browser sessions."""
    from db.users import revoke_user

    with _session() as session:
        if not revoke_user(session, name):
            raise click.ClickException(f"no active user {name!r}")
        record_event(session, AuditEventType.USER_REVOKED, actor=_actor(), detail={"user": name})
        session.commit()
    click.echo(f"revoked {name}")


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _query_command(
    name: str, query: Callable[..., list[dict[str, Any]]], help_text: str
) -> click.Command:
    """An audit subcommand over a time range, printed in any format, its run audited."""

    @click.option("--since", type=click.DateTime(TIME_FORMATS), help="From (UTC, inclusive).")
    @click.option("--until", type=click.DateTime(TIME_FORMATS), help="Until (UTC, exclusive).")
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")
    def command(since: datetime | None, until: datetime | None, fmt: str, **extra: Any) -> None:
        start, end = _utc(since), _utc(until)
        with _session() as session:
            rows = query(session, since=start, until=end, **extra)
            record_event(
                session, AuditEventType.AUDIT_QUERY_RUN, actor=_actor(),
                detail={"query": name, "rows": len(rows),
                        "since": start.isoformat() if start else None,
                        "until": end.isoformat() if end else None, **extra},
            )  # fmt: skip
            session.commit()
        click.echo(render(rows, fmt))

    command.__doc__ = help_text
    return click.command(name)(command)


def add_audit_queries(audit: click.Group) -> None:
    """Attach the auditors' queries to the ``triage audit`` group."""
    from db import audit_queries as q

    findings = _query_command(
        "findings", q.findings,
        "Studies whose result says FINDING >= MIN_PROBABILITY (e.g. --finding any "
        "--min-probability 0.5 --since 2026-11-23 --until 2026-11-30 --bundle 0.1.0).",
    )  # fmt: skip
    findings = click.option("--finding", default="any", show_default=True)(findings)
    findings = click.option(
        "--min-probability", type=click.FloatRange(0, 1), default=0.5, show_default=True
    )(findings)
    findings = click.option(
        "--bundle", default=None, help="Bundle name, version or sha256 prefix (8+ hex)."
    )(findings)
    audit.add_command(findings)
    for name, query, text in (
        ("undelivered", q.never_delivered, "Studies received but never delivered, and why."),
        ("not-assessed", q.not_assessed, "Studies the model did not assess, and why."),
        ("latency", q.latency_per_day,
         "Last image -> result and -> delivered, mean and p95 per day."),
        ("shadow-agreement", q.shadow_agreement,
         "Agreement of each shadow bundle with the deployed one."),
        ("positive-rate", q.positive_rate,
         "Positive rate per calling AE (scanner) per ISO week: a drifting site shows up."),
    ):  # fmt: skip
        audit.add_command(_query_command(name, query, text))
