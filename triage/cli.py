"""The ``triage`` command: thin entry points for operators; the work lives in the packages."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click

from triage.logging_config import configure_logging
from triage.settings import Settings, SettingsError, load_settings, settings_table


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


@click.group()
@click.option("--log-level", default="INFO", show_default=True)
def main(log_level: str) -> None:
    """pacs-triage: DICOM listener and worker triaging head CT for ICH and stroke (a triage aid)."""
    configure_logging(log_level)


@main.command()
def listen() -> None:
    """Run the DICOM listener (C-STORE SCP) until interrupted."""
    from listener.service import start_listener

    service = start_listener(_settings())
    try:
        _wait_for_signal()
    finally:
        service.stop()


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations up to the newest schema."""
    from db.migrate import upgrade_to_head

    settings = _settings()
    upgrade_to_head(settings.database_url)
    click.echo("database is at the newest schema")


@main.group()
def audit() -> None:
    """Audit queries over what was received and predicted."""


@audit.command("studies")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table")
def audit_studies(fmt: str) -> None:
    """List studies with their state, counts and times."""
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade_to_head
    from db.queries import study_summaries

    settings = _settings()
    upgrade_to_head(settings.database_url)
    sessions = make_session_factory(make_engine(settings.database_url))
    with sessions() as session:
        rows = study_summaries(session)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        click.echo(
            f"{row['study_instance_uid']:<64} {row['state']:<10} "
            f"{row['series_count']:>3} series {row['instance_count']:>5} instances "
            f"{row['calling_aet'] or '-'}"
        )


@main.command()
@click.option(
    "--write",
    "write_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write a synthetic head-CT phantom study into.",
)
@click.option("--slices", default=40, show_default=True)
@click.option("--lesion", "lesions", multiple=True, help="Lesion class to add (repeatable).")
@click.option("--seed", default=0, show_default=True)
def demo(write_dir: Path, slices: int, lesions: tuple[str, ...], seed: int) -> None:
    """Write a synthetic head-CT phantom study (for demos and tests; not patient data)."""
    from training.phantom import write_phantom_study

    study = write_phantom_study(write_dir, slices=slices, lesions=lesions, seed=seed)
    click.echo(f"wrote {len(study.files)} slices of study {study.study_uid} to {write_dir}")


@main.command("settings")
def show_settings() -> None:
    """Print every setting with its environment variable and default."""
    for env, default, description in settings_table():
        click.echo(f"{env:<36} {default:<28} {description}")


if __name__ == "__main__":
    main()
