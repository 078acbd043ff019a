"""The ``triage`` command: thin entry points for operators; the work lives in the packages."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click

from triage.cli_web import add_audit_queries, users, web
from triage.logging_config import configure_logging
from triage.settings import (
    Settings,
    SettingsError,
    load_settings,
    mask_url,
    settings_table,
    settings_values,
)


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


def _start_reconciler(settings: Settings) -> None:
    from db.engine import make_engine, make_session_factory
    from triage.queue import StudyQueue, make_celery
    from worker.reconciler import Reconciler

    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))
    Reconciler(sessions, StudyQueue(make_celery(settings)), settings).start()


@main.command()
@click.option(
    "--pool",
    default="prefork",
    show_default=True,
    type=click.Choice(["prefork", "solo", "threads"]),
)
@click.option(
    "--reconcile/--no-reconcile",
    default=True,
    show_default=True,
    help="Run the reconciler that re-queues studies without a result.",
)
def worker(pool: str, reconcile: bool) -> None:
    """Run a Celery inference worker (one per GPU or per CPU host)."""
    import os

    # Idle OpenMP threads sleep instead of spinning: on a CPU host shared with the listener
    # a spinning pool steals the cores the next study's decode needs. Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from db.migrate import upgrade_to_head

    settings = _settings()
    from worker.app import check_bundles_fit

    try:
        check_bundles_fit()  # before anything starts: a bundle for pictures or other findings
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    upgrade_to_head(settings.database.url.get_secret_value())
    if reconcile:
        _start_reconciler(settings)
    from triage.queue import INFERENCE_QUEUE
    from worker.app import app

    app.conf.worker_pool = pool
    app.worker_main(
        [
            "worker",
            "--queues",
            INFERENCE_QUEUE,
            "--concurrency",
            str(settings.worker.concurrency),
            "--pool",
            pool,
            "--loglevel",
            logging.getLevelName(logging.getLogger().level),
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.command("delivery-worker")
def delivery_worker() -> None:
    """Run the delivery worker: sends results from the outbox (DICOM, HL7, webhook, UPS).

    A Celery worker on the delivery queue (woken as each result is stored) plus a sweep
    that sends every due delivery, so retries and restarts need no message.
    """
    from db.migrate import upgrade_to_head

    settings = _settings()
    upgrade_to_head(settings.database.url.get_secret_value())
    from triage.queue import DELIVERY_QUEUE
    from worker.delivery.app import app, start_sweep

    start_sweep()
    app.worker_main(
        [
            "worker",
            "--queues",
            DELIVERY_QUEUE,
            "--pool",
            "solo",
            "--hostname",
            "delivery@%h",
            "--loglevel",
            logging.getLevelName(logging.getLogger().level),
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.command()
def serve() -> None:
    """Run listener, worker, delivery worker and web app together (what `make run` starts)."""
    from listener.service import start_listener

    settings = _settings()
    service = start_listener(settings)
    from triage.web.server import make_server, serve_in_thread

    web_server = make_server(settings)
    serve_in_thread(web_server)  # before the worker: a busy web port stops serve at once
    worker_process = subprocess.Popen([sys.executable, "-m", "triage.cli", "worker"])
    delivery_process = subprocess.Popen([sys.executable, "-m", "triage.cli", "delivery-worker"])
    click.echo(
        f"pacs-triage serving: DICOM {settings.dicom.ae_title}@{settings.dicom.bind}:{service.port}, "
        f"web {settings.web.bind}:{settings.web.port}, "
        f"database {mask_url(settings.database.url.get_secret_value())}, "
        f"model bundle {settings.models.bundle}"
    )
    try:
        _wait_for_signal()
    finally:
        web_server.should_exit = True
        service.stop()
        for process in (worker_process, delivery_process):
            process.terminate()
        for process in (worker_process, delivery_process):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations up to the newest schema."""
    from db.migrate import upgrade_to_head

    settings = _settings()
    upgrade_to_head(settings.database.url.get_secret_value())
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
    upgrade_to_head(settings.database.url.get_secret_value())
    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))
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


@audit.command("predictions")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table")
@click.option("--include-shadow", is_flag=True, help="Also list shadow-model predictions.")
def audit_predictions(fmt: str, include_shadow: bool) -> None:
    """Newest prediction per study with the exact bundle (name, version, sha256) that made it.

    Reading results is itself audited (event ``result_viewed``, actor ``cli:<os user>``).
    """
    import getpass

    from db.audit import record_event
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade_to_head
    from db.results import latest_predictions
    from db.vocabulary import AuditEventType

    settings = _settings()
    upgrade_to_head(settings.database.url.get_secret_value())
    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))
    with sessions() as session:
        rows = latest_predictions(session, include_shadow=include_shadow)
        record_event(
            session,
            AuditEventType.RESULT_VIEWED,
            actor=f"cli:{getpass.getuser()}",
            detail={"command": "audit predictions", "studies": len(rows)},
        )
        session.commit()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        demo = " SYNTHETIC DEMO - NOT FOR CLINICAL USE" if row["synthetic_demo"] else ""
        flagged = ",".join(k for k, v in row["flags"].items() if v) or "-"
        click.echo(
            f"{row['study_instance_uid']:<64} {row['priority']:<9} {flagged:<40} "
            f"{row['bundle_name']} {row['bundle_version']} {row['bundle_sha256'][:12]}"
            f"{' shadow' if row['shadow'] else ''}{demo}"
        )


@audit.command("deliveries")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table")
@click.option(
    "--state",
    type=click.Choice(["pending", "sending", "sent", "retrying", "dead"]),
    default=None,
    help="Only deliveries in this state.",
)
def audit_deliveries(fmt: str, state: str | None) -> None:
    """Every delivery with its state, attempts, last error and next attempt time.

    The listing shows each result's priority, so reading it is audited like
    ``audit predictions`` (event ``result_viewed``, actor ``cli:<os user>``).
    """
    import getpass

    from db.audit import record_event
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade_to_head
    from db.outbox import deliveries
    from db.vocabulary import AuditEventType, DeliveryState

    settings = _settings()
    upgrade_to_head(settings.database.url.get_secret_value())
    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))
    with sessions() as session:
        rows = deliveries(session, state=DeliveryState(state) if state else None)
        record_event(
            session,
            AuditEventType.RESULT_VIEWED,
            actor=f"cli:{getpass.getuser()}",
            detail={"command": "audit deliveries", "deliveries": len(rows)},
        )
        session.commit()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(
        f"{'id':>6} {'state':<8} {'tries':>5} {'channel':<7} {'destination':<32} "
        f"{'next attempt':<25} study / last error"
    )
    for row in rows:
        click.echo(
            f"{row['id']:>6} {row['state']:<8} {row['attempts']:>5} {row['channel']:<7} "
            f"{row['destination'][:32]:<32} {row['next_attempt_at'] or '-':<25} "
            f"{row['study_instance_uid']} v{row['study_version']}"
            + (f" | {row['last_error'][:200]}" if row["last_error"] else "")
        )


@main.group("deliveries")
def deliveries_group() -> None:
    """Operate on the delivery outbox."""


@deliveries_group.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--dead", "all_dead", is_flag=True, help="Re-queue every dead delivery.")
def deliveries_retry(ids: tuple[int, ...], all_dead: bool) -> None:
    """Put dead deliveries (by ID, or all with --dead) back in the outbox with fresh attempts."""
    import getpass

    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade_to_head
    from db.outbox import requeue_dead

    if bool(ids) == all_dead:
        raise click.UsageError("give delivery IDs or --dead (not both)")
    settings = _settings()
    upgrade_to_head(settings.database.url.get_secret_value())
    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))
    with sessions() as session:
        done = requeue_dead(
            session, ids=None if all_dead else list(ids), actor=f"cli:{getpass.getuser()}"
        )
    skipped = sorted(set(ids) - set(done))
    click.echo(f"re-queued {len(done)} deliveries: {' '.join(map(str, done)) or '-'}")
    if skipped:
        click.echo(f"not dead (left alone): {' '.join(map(str, skipped))}", err=True)
        sys.exit(1)


add_audit_queries(audit)
main.add_command(users)
main.add_command(web)


# Pixels of an unseeded demo: the same phantom image every time, under fresh UIDs.
DEMO_PIXEL_SEED = 0


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
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed for UIDs and pixels; the same seed writes the same study again. "
    "Without it every call writes a new study (fresh UIDs).",
)
def demo(write_dir: Path, slices: int, lesions: tuple[str, ...], seed: int | None) -> None:
    """Write a synthetic head-CT phantom study (for demos and tests; not patient data).

    A listener treats a known Study Instance UID as more of the same study, so a demo
    re-sent without ``--seed`` must be a new study to be triaged again.
    """
    from pydicom.uid import generate_uid

    from training.phantom import write_phantom_study

    study = write_phantom_study(
        write_dir,
        slices=slices,
        lesions=lesions,
        seed=DEMO_PIXEL_SEED if seed is None else seed,
        study_uid=generate_uid() if seed is None else None,
    )
    click.echo(f"wrote {len(study.files)} slices of study {study.study_uid} to {write_dir}")


@main.command("settings")
@click.option(
    "--defaults",
    is_flag=True,
    help="List every variable with its default and meaning instead of the values in use.",
)
def show_settings(defaults: bool) -> None:
    """Print the settings in use (environment, TOML file, derived), passwords masked."""
    if defaults:
        for env, default, description in settings_table():
            click.echo(f"{env:<36} {default:<28} {description}")
        return
    for env, value in settings_values(_settings()):
        click.echo(f"{env:<36} {value}")


if __name__ == "__main__":
    main()
