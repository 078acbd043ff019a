"""A whole pacs-triage system on one machine, for the cluster scenario and the fault scenarios.

One machine stands in for many: a listener process, N inference worker processes, a delivery
worker, PostgreSQL and Redis (the machine's own, each run in a fresh database / Redis db
number so runs never see each other's rows or messages) and Orthanc as the destination PACS.
Every part is a real process that a scenario can SIGKILL and start again, exactly as an
operator's process supervisor would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from bench.dicom_peers import REPO_ROOT, Peer, dcmtk_env, start_triage
from bench.orthanc_peer import Orthanc, start_orthanc
from db.models import Delivery, Instance, Prediction, Study
from db.vocabulary import DeliveryState
from triage.destinations import Channel

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379"


def wait_for(probe: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``probe`` until it returns something true or ``timeout`` seconds pass (then None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    return None


def fresh_postgres_database() -> str:
    """Create an empty PostgreSQL database for one run and return its URL."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_postgres_database(url: str) -> None:
    """Drop a database made by :func:`fresh_postgres_database` (its connections are closed)."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def fresh_redis_url(db_number: int) -> str:
    """A Redis database number emptied for this run (the machine's Redis keeps nothing)."""
    import redis

    client = redis.Redis.from_url(f"{REDIS_URL}/{db_number}")
    client.flushdb()
    client.close()
    return f"{REDIS_URL}/{db_number}"


def _says_ready(log: Path) -> bool:
    return log.exists() and b"ready" in log.read_bytes()


@dataclass
class StudyOutcome:
    """What the database says about one study at the end of a run."""

    study_uid: str
    instances: int
    predictions: int
    sent_sr_uids: list[str]
    last_received_at: Any
    prediction_at: Any


@dataclass
class Stack:
    """The running processes of one system and the handles a scenario needs."""

    work: Path
    env: dict[str, str]
    database_url: str
    orthanc: Orthanc
    listener: Peer | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    delivery: subprocess.Popen[bytes] | None = None
    _sessions: sessionmaker[Session] | None = None

    # -- processes ---------------------------------------------------------------------
    def start_listener(self) -> Peer:
        """Start (or start again) the listener on a free port; its spool outlives it."""
        self.listener = start_triage(self.work, fsync=True, extra_env=self.env)
        return self.listener

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.env,
            "PYTHONPATH": str(REPO_ROOT),
            "TRIAGE_VAR_DIR": str(self.work / "var"),
            "TRIAGE_SPOOL_DIR": str(self.work / "spool"),
            "TRIAGE_QUARANTINE_DIR": str(self.work / "quarantine"),
        }
        log = open(self.work / log_name, "ab")  # noqa: SIM115 - owned by the process
        return subprocess.Popen(
            [sys.executable, "-m", "triage.cli", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_worker(self, index: int, *, reconcile: bool = False) -> subprocess.Popen[bytes]:
        """Start inference worker ``index`` (solo pool: one study at a time per process)."""
        args = ["worker", "--pool", "solo", "--reconcile" if reconcile else "--no-reconcile"]
        process = self._spawn(args, f"worker{index}.log")
        if index < len(self.workers):
            self.workers[index] = process
        else:
            self.workers.append(process)
        return process

    def start_delivery(self) -> subprocess.Popen[bytes]:
        """Start the delivery worker."""
        self.delivery = self._spawn(["delivery-worker"], "delivery.log")
        return self.delivery

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Wait until every worker log says Celery is ready (the model is loaded by then)."""
        logs = [self.work / f"worker{i}.log" for i in range(len(self.workers))]
        logs.append(self.work / "delivery.log")
        for log in logs:
            if not wait_for(partial(_says_ready, log), timeout):
                raise RuntimeError(f"{log.name}: not ready within {timeout:.0f} s")

    def restart_orthanc(self) -> None:
        """Start the (stopped) PACS again on the same ports and storage, as after an outage."""
        self.orthanc.stop()
        log = open(self.orthanc.folder / "orthanc.log", "ab")  # noqa: SIM115 - owned by Orthanc
        self.orthanc.process = subprocess.Popen(
            ["Orthanc", str(self.orthanc.folder / "orthanc.json")],
            env=dcmtk_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if not wait_for(self._orthanc_answers, 30):
            raise RuntimeError("Orthanc did not come back within 30 s")

    def _orthanc_answers(self) -> bool:
        try:
            self.orthanc.rest("GET", "/system")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 30 s) and Orthanc."""
        for process in [*self.workers, *([self.delivery] if self.delivery else [])]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, *([self.delivery] if self.delivery else [])]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.listener is not None:
            self.listener.stop()
        self.orthanc.stop()

    # -- what happened -----------------------------------------------------------------
    @property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions on this run's database (the scenario's own view, not the system's)."""
        if self._sessions is None:
            self._sessions = sessionmaker(
                create_engine(self.database_url, pool_pre_ping=True), expire_on_commit=False
            )
        return self._sessions

    def outcome(self, study_uid: str) -> StudyOutcome:
        """Instances, current predictions and acknowledged SRs the database holds for a study."""
        with self.sessions() as session:
            study = session.scalars(
                select(Study).where(Study.study_instance_uid == study_uid)
            ).one_or_none()
            if study is None:
                return StudyOutcome(study_uid, 0, 0, [], None, None)
            instances = session.scalar(
                select(func.count(Instance.id))
                .join(Instance.series)
                .where(Instance.series.has(study_id=study.id))
            )
            predictions = session.scalars(
                select(Prediction).where(
                    Prediction.study_id == study.id,
                    Prediction.study_version == study.version,
                    Prediction.shadow.is_(False),
                )
            ).all()
            sent = session.scalars(
                select(Delivery).where(
                    Delivery.prediction_id.in_([p.id for p in predictions] or [-1]),
                    Delivery.state == DeliveryState.SENT,
                    Delivery.channel == Channel.DICOM,
                )
            ).all()
            return StudyOutcome(
                study_uid,
                int(instances or 0),
                len(predictions),
                [str(d.document_uids.get("sr")) for d in sent],
                study.last_received_at,
                predictions[0].created_at if predictions else None,
            )

    def sr_copies_in_orthanc(self, sr_uid: str) -> int:
        """How many instances with this SOP Instance UID Orthanc holds (0 or 1 for a PACS)."""
        found = self.orthanc.rest("POST", "/tools/lookup", sr_uid) or []
        return sum(1 for item in found if item.get("Type") == "Instance")


def start_stack(
    work: Path,
    *,
    database_url: str,
    broker_url: str,
    workers: int,
    extra_env: dict[str, str] | None = None,
    bundle: Path | None = None,
) -> Stack:
    """Start Orthanc, the listener, ``workers`` inference workers and the delivery worker."""
    work.mkdir(parents=True, exist_ok=True)
    orthanc = start_orthanc(work / "orthanc", triage_port=1)
    env = {
        "TRIAGE_DATABASE_URL": database_url,
        "TRIAGE_BROKER_URL": broker_url,
        "TRIAGE_MODEL_BUNDLE": str(bundle or REPO_ROOT / "worker" / "bundles" / "demo"),
        "TRIAGE_TORCH_THREADS": "1",
        "TRIAGE_DICOM_DESTINATIONS": orthanc.destination,
        "TRIAGE_DELIVERY_POLL_SECONDS": "0.5",
        **(extra_env or {}),
    }
    stack = Stack(work, env, database_url, orthanc)
    try:
        stack.start_listener()
        for index in range(workers):
            stack.start_worker(index, reconcile=index == 0)
        stack.start_delivery()
        stack.wait_ready()
    except Exception:
        stack.stop()
        raise
    return stack
