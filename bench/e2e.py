"""End-to-end latency: last slice acknowledged -> prediction committed.

Run ``python -m bench.e2e [--bundle DIR] [--rounds R] [--broker redis://...]``. Starts a
real ``triage listen`` and a real ``triage worker`` (embedded defaults: SQLite and the
file-system broker, unless ``--broker``/``--database`` say otherwise), then for each round
DCMTK ``storescu`` sends a fresh 40-slice phantom study whose series announces its count
(Images in Acquisition), so completion comes by slice count. The clock starts when
``storescu`` exits (every C-STORE answered) and stops at the prediction's commit time.
Goal on CPU: <= 5 s.

With ``--studies ../shared/data`` it sends instead, in each round, the real studies of
:mod:`bench.completion` and every scanner layout of :mod:`training.phantom_layouts`, each
as a copy with fresh UIDs (so every round is a new study; nothing is written beside the
data), and prints the median latency per study with the shipped timers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import select

from bench.dicom_peers import REPO_ROOT, SendResult, send, start_triage
from db.engine import make_engine, make_session_factory
from db.models import Prediction, Study
from training.phantom import write_phantom_study

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GOAL_SECONDS = 5.0


def _prediction_time(sessions, study_uid: str) -> tuple[datetime, dict] | None:
    with sessions() as session:
        row = session.execute(
            select(Prediction.created_at, Prediction.timings)
            .join(Study, Study.id == Prediction.study_id)
            .where(Study.study_instance_uid == study_uid)
        ).first()
    return (row[0], row[1]) if row else None


def _send_and_wait(
    port: int, files: list[Path], study_uid: str, sessions: Any, *, timeout: float
) -> tuple[SendResult, datetime, tuple[datetime, dict] | None]:
    """Send a study with storescu; (its run, when it was acknowledged, its prediction)."""
    result = send(port, files, aet="TRIAGE")
    acked = datetime.now(UTC)
    if result.returncode != 0:
        raise SystemExit(f"storescu failed: {result.output[-500:]}")
    found = None
    deadline = time.monotonic() + timeout
    while found is None and time.monotonic() < deadline:
        found = _prediction_time(sessions, study_uid)
        time.sleep(0.02)
    return result, acked, found


def fresh_copy(files: list[Path], dest: Path) -> tuple[str, list[Path]]:
    """Copy a study under ``dest`` with new Study, Series and SOP Instance UIDs."""
    dest.mkdir(parents=True, exist_ok=True)
    mapping: dict[str, str] = {}
    copies = []
    study_uid = ""
    for number, path in enumerate(files):
        ds = pydicom.dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if keyword in ds:
                old = str(ds[keyword].value)
                ds[keyword].value = mapping.setdefault(old, generate_uid())
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        study_uid = str(ds.StudyInstanceUID)
        copy = dest / f"{number:04d}.dcm"
        ds.save_as(copy)
        copies.append(copy)
    return study_uid, copies


def _named_studies(root: Path, work: Path) -> dict[str, list[Path]]:
    from bench.completion import REAL_STUDIES, study_files
    from training.phantom_layouts import LAYOUTS, write_layout

    studies = {
        name: study_files(root, folders)
        for name, folders in REAL_STUDIES.items()
        if all((root / f).is_dir() for f in folders)
    }
    for name in LAYOUTS:
        studies[f"layout {name}"] = list(write_layout(work / "layouts" / name, name).files)
    return studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=REPO_ROOT / "worker" / "bundles" / "demo")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--broker", default="", help="e.g. redis://127.0.0.1:6379/5")
    parser.add_argument("--database", default="", help="SQLAlchemy URL (default SQLite)")
    parser.add_argument(
        "--studies", type=Path, default=None, help="send real studies and layouts (data root)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    env = {
        "TRIAGE_MODEL_BUNDLE": str(args.bundle),
        "TRIAGE_TORCH_THREADS": str(os.cpu_count() or 2),
        "TRIAGE_VAR_DIR": str(work / "var"),
    }
    if args.broker:
        env["TRIAGE_BROKER_URL"] = args.broker
    database = args.database or f"sqlite:///{work / 'var' / 'triage.sqlite'}"
    env["TRIAGE_DATABASE_URL"] = database
    listener = start_triage(work, fsync=True, extra_env=env)
    worker_env = {
        **os.environ,
        **env,
        "PYTHONPATH": str(REPO_ROOT),
        "TRIAGE_SPOOL_DIR": str(work / "spool"),
    }
    worker_log = open(work / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "triage.cli", "worker", "--pool", "solo", "--no-reconcile"],
        cwd=REPO_ROOT,
        env=worker_env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    sessions = make_session_factory(make_engine(database))
    latencies: list[float] = []
    details: list[dict] = []
    try:
        deadline = time.monotonic() + 120
        while b"ready" not in (work / "worker.log").read_bytes():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("worker did not start; see " + str(work / "worker.log"))
            time.sleep(0.2)
        if args.studies is not None:
            _named_rounds(args, work, listener.port, sessions)
            return
        for round_no in range(args.rounds + 1):  # round 0 warms caches, not counted
            study = write_phantom_study(
                work / f"study{round_no}",
                slices=args.slices,
                lesions=("epidural",),
                seed=100 + round_no,
            )
            result, acked, found = _send_and_wait(
                listener.port, study.files, study.study_uid, sessions, timeout=120
            )
            if found is None:
                raise SystemExit("no prediction within 120 s; see " + str(work / "worker.log"))
            latency = (found[0] - acked).total_seconds()
            if round_no:
                latencies.append(latency)
                details.append(
                    {"latency_s": round(latency, 3), "send_s": round(result.seconds, 3), **found[1]}
                )
            print(
                f"round {round_no}: send {result.seconds:.2f}s, last ack -> prediction "
                f"{latency:.2f}s{'' if round_no else ' (warm-up)'}"
            )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        worker_log.close()
        listener.stop()
    median = statistics.median(latencies)
    print(
        f"median last-ack -> prediction: {median:.2f}s over {len(latencies)} rounds "
        f"(goal <= {GOAL_SECONDS:g}s: {'met' if median <= GOAL_SECONDS else 'NOT met'})"
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"e2e-{datetime.now(UTC):%Y%m%d}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "broker": args.broker or "filesystem (embedded)",
                "database": database.split("@")[-1],
                "bundle": str(args.bundle),
                "slices": args.slices,
                "median_latency_s": median,
                "rounds": details,
                "load_average": os.getloadavg(),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"written {out}")
    shutil.rmtree(work, ignore_errors=True)


def _named_rounds(args: argparse.Namespace, work: Path, port: int, sessions: Any) -> None:
    """Each real study and layout, ``args.rounds`` times with fresh UIDs; medians printed."""
    results: dict[str, list[float]] = {}
    studies = _named_studies(args.studies, work)
    for round_no in range(args.rounds):
        for name, files in studies.items():
            study_uid, copies = fresh_copy(files, work / "copies" / f"{round_no}-{len(results)}")
            _, acked, found = _send_and_wait(port, copies, study_uid, sessions, timeout=150)
            latency = (found[0] - acked).total_seconds() if found else float("inf")
            results.setdefault(name, []).append(latency)
            print(f"round {round_no} {name:<28} last ack -> prediction {latency:.2f}s", flush=True)
    print(f"{'study':<30} median s (of {args.rounds})  goal <= {GOAL_SECONDS:g} s")
    for name, latencies in results.items():
        median = statistics.median(latencies)
        print(f"{name:<30} {median:8.2f}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"e2e-studies-{datetime.now(UTC):%Y%m%d}.json"
    out.write_text(json.dumps({"rounds": args.rounds, "latency_s": results}, indent=1) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
