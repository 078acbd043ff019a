"""Fault scenarios: parts of a running system fail, and nothing is lost or doubled.

Run ``python -m bench.faults [SCENARIO ...]`` (default: all). Each scenario starts a whole
system with :mod:`bench.stack` (listener, inference worker, delivery worker, PostgreSQL,
Redis, Orthanc as the PACS), sends phantom studies with DCMTK ``storescu``, breaks one part
while they are on their way, lets it come back, and then checks the pass rule:

* every study sent ends with exactly one current prediction and exactly one SR that Orthanc
  acknowledged and holds once;
* nothing the listener acknowledged is lost (every instance ``storescu`` saw acknowledged
  is in the database).

Each scenario prints one ``fault NAME: PASS|FAIL`` line with its figures; all of them are
saved under ``bench/results/faults-DATE.json``. Timers are shortened by settings so that a
lost task is found in seconds (reconciler, visibility timeout, delivery lease and backoff);
the faults themselves are real: SIGKILL, a Redis restarted empty, a PostgreSQL cluster
stopped for 30 s, a spool on a full tmpfs, a PACS down for a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text

from bench.dicom_peers import SendResult, free_port, send, spawn_sender
from bench.stack import (
    Stack,
    drop_postgres_database,
    fresh_postgres_database,
    fresh_redis_url,
    start_stack,
    wait_for,
)
from db.models import Delivery, Job
from db.vocabulary import DeliveryState, JobState
from training.phantom import PhantomStudy, write_phantom_study

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Short timers so a lost message or lease is found in seconds, not the production minutes.
FAST_RECOVERY = {
    "TRIAGE_RECONCILE_AFTER_SECONDS": "10",
    "TRIAGE_RECONCILE_INTERVAL_SECONDS": "3",
    "TRIAGE_TASK_TIME_LIMIT": "25",
    "TRIAGE_VISIBILITY_TIMEOUT": "30",
    "TRIAGE_DELIVERY_ACK_TIMEOUT": "5",
    "TRIAGE_DELIVERY_BACKOFF_SECONDS": "2",
    "TRIAGE_DELIVERY_BACKOFF_MAX_SECONDS": "10",
    "TRIAGE_DELIVERY_MAX_ATTEMPTS": "40",
}
SETTLE_TIMEOUT = 420.0


@dataclass
class Scenario:
    """A running scenario: its system, its studies and what it measured."""

    name: str
    work: Path
    stack: Stack
    studies: list[PhantomStudy] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def study(self, index: int, *, slices: int = 24, size: int = 256) -> PhantomStudy:
        """Write one more phantom study (a different seed per scenario and index)."""
        study = write_phantom_study(
            self.work / "studies" / f"{self.name}{index}",
            slices=slices,
            size=size,
            lesions=("intraparenchymal",) if index % 2 else (),
            seed=hash((self.name, index)) % 100_000,
        )
        self.studies.append(study)
        return study

    def send(self, study: PhantomStudy) -> SendResult:
        """Send a whole study over one association to the listener as it runs now."""
        assert self.stack.listener is not None
        return send(self.stack.listener.port, study.files, aet="TRIAGE")

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> bool:
        """Wait until every study has a delivered SR in Orthanc; then check the pass rule."""
        started = time.monotonic()

        def delivered() -> bool:
            for study in self.studies:
                outcome = self.stack.outcome(study.study_uid)
                if not outcome.sent_sr_uids:
                    return False
                if not self.stack.sr_copies_in_orthanc(outcome.sent_sr_uids[0]):
                    return False
            return True

        wait_for(delivered, timeout, interval=0.5)
        outcomes = [self.stack.outcome(s.study_uid) for s in self.studies]
        copies = [self.stack.sr_copies_in_orthanc(uid) for o in outcomes for uid in o.sent_sr_uids]
        self.figures.update(
            {
                "studies": len(self.studies),
                "instances_sent": sum(len(s.files) for s in self.studies),
                "instances_stored": sum(o.instances for o in outcomes),
                "with_one_prediction": sum(1 for o in outcomes if o.predictions == 1),
                "with_one_sr_in_orthanc": sum(
                    1
                    for o in outcomes
                    if len(o.sent_sr_uids) == 1
                    and self.stack.sr_copies_in_orthanc(o.sent_sr_uids[0]) == 1
                ),
                "duplicate_predictions": sum(max(0, o.predictions - 1) for o in outcomes),
                "duplicate_srs": sum(max(0, c - 1) for c in copies),
                "settle_s": round(time.monotonic() - started, 1),
            }
        )
        n = len(self.studies)
        return (
            self.figures["instances_stored"] == self.figures["instances_sent"]
            and self.figures["with_one_prediction"] == n
            and self.figures["with_one_sr_in_orthanc"] == n
            and self.figures["duplicate_predictions"] == 0
            and self.figures["duplicate_srs"] == 0
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def _job_running(stack: Stack) -> bool:
    with stack.sessions() as session:
        return (
            session.scalar(select(Job.id).where(Job.state == JobState.RUNNING).limit(1)) is not None
        )


def _delivery_in(stack: Stack, state: DeliveryState) -> bool:
    with stack.sessions() as session:
        return (
            session.scalar(select(Delivery.id).where(Delivery.state == state).limit(1)) is not None
        )


# -- the scenarios --------------------------------------------------------------------------


def worker_sigkill(sc: Scenario) -> bool:
    """SIGKILL the only inference worker mid-inference, start it again."""
    study = sc.study(0, slices=40, size=512)
    assert sc.send(study).returncode == 0
    running = wait_for(lambda: _job_running(sc.stack), 120, interval=0.02)
    sc.figures["killed_while_running"] = bool(running)
    _kill(sc.stack.workers[0])
    sc.stack.start_worker(0, reconcile=True)
    return sc.settle()


def delivery_sigkill(sc: Scenario) -> bool:
    """SIGKILL the delivery worker while it sends, start it again."""
    assert sc.stack.delivery is not None
    sc.stack.delivery.terminate()
    sc.stack.delivery.wait()
    study = sc.study(0)
    assert sc.send(study).returncode == 0
    wait_for(lambda: _delivery_in(sc.stack, DeliveryState.PENDING), 180)
    sender = sc.stack.start_delivery()
    sending = wait_for(lambda: _delivery_in(sc.stack, DeliveryState.SENDING), 120, interval=0.005)
    _kill(sender)
    sc.figures["killed_while_sending"] = bool(sending)
    sc.stack.start_delivery()
    return sc.settle()


def redis_restart(sc: Scenario) -> bool:
    """Studies queued, Redis restarted without persistence (the queue is gone), workers back."""
    for worker in sc.stack.workers:
        worker.terminate()
        worker.wait()
    for index in range(3):
        assert sc.send(sc.study(index)).returncode == 0
    time.sleep(sc.figures.setdefault("queued_wait_s", 8))
    redis = sc.figures["redis"]
    _kill(redis["process"])
    redis["process"] = _start_redis(redis["port"])
    sc.figures["redis"] = {"port": redis["port"], "restarted_empty": True}
    sc.stack.start_worker(0, reconcile=True)
    return sc.settle()


def postgres_stop(sc: Scenario) -> bool:
    """PostgreSQL stopped for 30 s while a study is received and another is inferred."""
    cluster = sc.figures["cluster"]
    first = sc.study(0, slices=40, size=512)
    assert sc.send(first).returncode == 0
    wait_for(lambda: _job_running(sc.stack), 120, interval=0.05)
    second = sc.study(1, slices=40, size=512)
    assert sc.stack.listener is not None
    sender = spawn_sender(sc.stack.listener.port, second.files, aet="TRIAGE")
    time.sleep(0.5)
    subprocess.run(["pg_ctlcluster", "15", cluster, "stop", "-m", "fast"], check=True)
    stopped = time.monotonic()
    _, err = sender.communicate(timeout=300)
    sc.figures["send_during_outage_rc"] = sender.returncode
    time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
    subprocess.run(["pg_ctlcluster", "15", cluster, "start"], check=True)
    sc.figures["outage_s"] = round(time.monotonic() - stopped, 1)
    if sender.returncode != 0:
        # A scanner whose send failed sends again; the listener must take it whole then.
        sc.figures["resent"] = True
        assert sc.send(second).returncode == 0
    return sc.settle()


def listener_sigkill(sc: Scenario) -> bool:
    """SIGKILL the listener mid-association, start it again, let the sender resend."""
    study = sc.study(0, slices=60, size=512)
    assert sc.stack.listener is not None
    spool = sc.stack.work / "spool"
    sender = spawn_sender(sc.stack.listener.port, study.files, aet="TRIAGE")
    wait_for(lambda: sum(1 for _ in spool.rglob("*.dcm")) >= 20, 120, interval=0.01)
    sc.figures["spooled_before_kill"] = sum(1 for _ in spool.rglob("*.dcm"))
    _kill(sc.stack.listener.proc)
    sender.wait(timeout=60)
    sc.figures["sender_rc_after_kill"] = sender.returncode
    sc.stack.start_listener()
    assert sc.send(study).returncode == 0
    return sc.settle()


def disk_full(sc: Scenario) -> bool:
    """The spool's disk fills (a small tmpfs): 0xA700, then space is freed and the study resent."""
    study = sc.study(0, slices=40, size=512)
    assert sc.stack.listener is not None
    result = send(sc.stack.listener.port, study.files, aet="TRIAGE", options=["-v"])
    sc.figures["first_send_rc"] = result.returncode
    lowered = result.output.lower()
    sc.figures["out_of_resources_statuses"] = lowered.count("a700") + lowered.count(
        "outofresources"
    )
    sc.figures["storescu_says"] = [
        line.strip() for line in result.output.splitlines() if "esponse" in line or "rror" in line
    ][-3:]
    spool = sc.stack.work / "spool"
    subprocess.run(["mount", "-o", "remount,size=512m", str(spool)], check=True)
    assert sc.send(study).returncode == 0
    return sc.settle() and sc.figures["out_of_resources_statuses"] > 0


def resend(sc: Scenario) -> bool:
    """A whole study sent again after its result was delivered."""
    study = sc.study(0)
    assert sc.send(study).returncode == 0
    first = sc.settle()
    assert sc.send(study).returncode == 0
    time.sleep(10)  # time enough for a wrong second completion to be queued and predicted
    return first and sc.settle()


def pacs_down(sc: Scenario) -> bool:
    """The destination PACS is down when the result is made and comes back a minute later."""
    sc.stack.orthanc.stop()
    down = time.monotonic()
    study = sc.study(0)
    assert sc.send(study).returncode == 0
    sc.figures["retrying_seen"] = bool(
        wait_for(lambda: _delivery_in(sc.stack, DeliveryState.RETRYING), 180)
    )
    time.sleep(max(0.0, 60 - (time.monotonic() - down)))
    sc.stack.restart_orthanc()
    sc.figures["pacs_down_s"] = round(time.monotonic() - down, 1)
    return sc.settle()


SCENARIOS: dict[str, Callable[[Scenario], bool]] = {
    "worker_sigkill": worker_sigkill,
    "delivery_sigkill": delivery_sigkill,
    "redis_restart": redis_restart,
    "postgres_stop": postgres_stop,
    "listener_sigkill": listener_sigkill,
    "disk_full": disk_full,
    "resend": resend,
    "pacs_down": pacs_down,
}


# -- set-up that some scenarios need ---------------------------------------------------------


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    if not wait_for(lambda: _pings(client), 15):
        raise RuntimeError("redis-server did not start")
    return process


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _own_postgres(name: str) -> str:
    """A PostgreSQL cluster of our own that the scenario may stop (the machine's stays up)."""
    port = free_port()
    subprocess.run(
        ["pg_createcluster", "15", name, "--port", str(port), "--start", "--", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CREATE DATABASE faults"))
    engine.dispose()
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/faults"


def run_scenario(name: str, redis_db: int) -> dict[str, Any]:
    """Set up, run and tear down one scenario; returns its figures with ``passed``."""
    work = Path(tempfile.mkdtemp(prefix=f"bench-faults-{name}-"))
    figures: dict[str, Any] = {}
    cleanup: list[Callable[[], object]] = []
    stack: Stack | None = None
    started = time.monotonic()
    try:
        broker = fresh_redis_url(redis_db)
        if name == "redis_restart":
            port = free_port()
            figures["redis"] = {"port": port, "process": _start_redis(port)}
            broker = f"redis://127.0.0.1:{port}/0"
        if name == "postgres_stop":
            cluster = f"faults{os.getpid()}"
            figures["cluster"] = cluster
            database = _own_postgres(cluster)
            cleanup.append(
                lambda: subprocess.run(
                    ["pg_dropcluster", "15", cluster, "--stop"], check=False, capture_output=True
                )
            )
        else:
            database = fresh_postgres_database()
            cleanup.append(lambda: drop_postgres_database(database))
        if name == "disk_full":
            spool = work / "system" / "spool"
            spool.mkdir(parents=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(spool)], check=True
            )
            cleanup.append(lambda: subprocess.run(["umount", "-l", str(spool)], check=False))
        stack = start_stack(
            work / "system",
            database_url=database,
            broker_url=broker,
            workers=1,
            extra_env=FAST_RECOVERY,
        )
        scenario = Scenario(name, work, stack, figures=figures)
        passed = SCENARIOS[name](scenario)
    except Exception as exc:  # noqa: BLE001 - a scenario that breaks is a FAIL with its reason
        passed = False
        figures["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if stack is not None:
            stack.stop()
        redis = figures.get("redis", {})
        if isinstance(redis, dict) and isinstance(redis.get("process"), subprocess.Popen):
            redis["process"].kill()
            redis["process"] = "stopped"
        for step in reversed(cleanup):
            step()
        figures.pop("redis", None)
        shutil.rmtree(work, ignore_errors=True)
    figures["passed"] = passed
    figures["wall_s"] = round(time.monotonic() - started, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=[])
    parser.add_argument("--redis-db", type=int, default=12)
    args = parser.parse_args()
    names = args.scenarios or list(SCENARIOS)
    results: dict[str, Any] = {}
    for name in names:
        figures = run_scenario(name, args.redis_db)
        results[name] = figures
        shown = ", ".join(f"{k}={v}" for k, v in figures.items() if k != "passed")
        print(f"fault {name}: {'PASS' if figures['passed'] else 'FAIL'} ({shown})", flush=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"faults-{datetime.now(UTC):%Y%m%d}.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous.update(results)
    out.write_text(json.dumps(previous, indent=1, default=str) + "\n")
    print(f"written {out}")
    raise SystemExit(0 if all(r["passed"] for r in results.values()) else 1)


if __name__ == "__main__":
    main()
