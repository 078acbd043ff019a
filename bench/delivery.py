"""Delivery latency: prediction committed -> SR in the PACS, and last slice -> SR in the PACS.

Run ``python -m bench.delivery [--rounds 5] [--bundle DIR] [--no-key-images]``. Starts
Orthanc as the PACS (its own config), a real ``triage listen``, ``triage worker`` and
``triage delivery-worker`` (embedded SQLite and file-system broker), with Orthanc as the
one DICOM destination. Each round DCMTK ``storescu`` sends a fresh 40-slice phantom study
that announces its count (completion by count). The clock starts when ``storescu`` exits
(every slice acknowledged); the SR counts as stored in Orthanc when Orthanc's REST API finds
its SOP Instance UID (polled every 20 ms). Goal: last slice -> SR in PACS <= 5 s.

The breakdown says where the time goes: document build (headers, Grad-CAM, highdicom,
spool; before the prediction commits), the wait for the delivery worker, the association,
and each C-STORE (SR, key images, KOS) as the delivery worker measured them.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.dicom_peers import REPO_ROOT, send, start_triage
from bench.orthanc_peer import start_orthanc
from bench.stack import wait_for
from db.engine import make_engine, make_session_factory
from db.models import AuditEvent, Delivery, Prediction, Study
from db.vocabulary import AuditEventType
from training.phantom import write_phantom_study

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GOAL_SECONDS = 5.0


def _row(sessions: Any, study_uid: str) -> tuple[Prediction, Delivery] | None:
    with sessions() as session:
        row = session.execute(
            select(Prediction, Delivery)
            .join(Study, Study.id == Prediction.study_id)
            .join(Delivery, Delivery.prediction_id == Prediction.id)
            .where(Study.study_instance_uid == study_uid)
        ).first()
    return (row[0], row[1]) if row else None


def _sent_detail(sessions: Any, study_uid: str) -> dict[str, Any] | None:
    with sessions() as session:
        event = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event_type == AuditEventType.RESULT_DELIVERED,
                AuditEvent.study_instance_uid == study_uid,
            )
        ).first()
    return dict(event.detail) if event else None


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "triage.cli", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=REPO_ROOT / "worker" / "bundles" / "demo")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--no-key-images", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    database = f"sqlite:///{work / 'var' / 'triage.sqlite'}"
    orthanc = start_orthanc(work / "orthanc", triage_port=1)
    env = {
        "TRIAGE_MODEL_BUNDLE": str(args.bundle),
        "TRIAGE_TORCH_THREADS": str(os.cpu_count() or 2),
        "TRIAGE_VAR_DIR": str(work / "var"),
        "TRIAGE_DATABASE_URL": database,
        "TRIAGE_DICOM_DESTINATIONS": orthanc.destination,
        "TRIAGE_KEY_IMAGES": "false" if args.no_key_images else "true",
    }
    listener = start_triage(work, fsync=True, extra_env=env)
    child_env = {
        **os.environ,
        **env,
        "PYTHONPATH": str(REPO_ROOT),
        "TRIAGE_SPOOL_DIR": str(work / "spool"),
    }
    worker = _spawn(["worker", "--pool", "solo", "--no-reconcile"], child_env, work / "worker.log")
    sender = _spawn(["delivery-worker"], child_env, work / "delivery.log")
    sessions = make_session_factory(make_engine(database))
    rounds: list[dict[str, Any]] = []
    try:
        for log, proc in ((work / "worker.log", worker), (work / "delivery.log", sender)):
            if not wait_for(lambda log=log: b"ready" in log.read_bytes(), 120, 0.2):
                raise SystemExit(f"{log.name}: process did not start (exit {proc.poll()})")
        for round_no in range(args.rounds + 1):  # round 0 warms caches, not counted
            study = write_phantom_study(
                work / f"study{round_no}",
                slices=args.slices,
                lesions=("epidural",),
                seed=200 + round_no,
            )
            result = send(listener.port, study.files, aet="TRIAGE")
            acked = datetime.now(UTC)
            if result.returncode != 0:
                raise SystemExit(f"storescu failed: {result.output[-500:]}")
            found = wait_for(lambda s=study: _row(sessions, s.study_uid), 120, 0.02)
            if found is None:
                raise SystemExit("no prediction within 120 s; see " + str(work / "worker.log"))
            prediction, delivery = found
            sr_uid = delivery.document_uids["sr"]
            seen = wait_for(lambda u=sr_uid: orthanc.rest("POST", "/tools/lookup", u), 60, 0.02)
            sr_at = datetime.now(UTC)
            if not seen:
                raise SystemExit("SR not in Orthanc within 60 s; see " + str(work / "delivery.log"))
            detail = wait_for(lambda s=study: _sent_detail(sessions, s.study_uid), 30, 0.02) or {}
            sent = detail.get("sent", {})
            figures = {
                "last_slice_to_sr_s": round((sr_at - acked).total_seconds(), 3),
                "prediction_to_sr_s": round((sr_at - prediction.created_at).total_seconds(), 3),
                "last_slice_to_prediction_s": round(
                    (prediction.created_at - acked).total_seconds(), 3
                ),
                "documents": prediction.timings.get("documents", {}),
                "inference_s": prediction.timings.get("inference_s"),
                "associate_s": sent.get("associate_s"),
                "stores": sent.get("stores"),
                "objects": sent.get("objects"),
                "attempts": detail.get("attempts"),
                "send_s": round(result.seconds, 3),
            }
            print(
                f"round {round_no}: last slice -> SR in Orthanc {figures['last_slice_to_sr_s']:.2f}s "
                f"(-> prediction {figures['last_slice_to_prediction_s']:.2f}s, "
                f"prediction -> SR {figures['prediction_to_sr_s']:.2f}s); "
                f"documents {figures['documents']}; association {figures['associate_s']}s; "
                f"C-STORE {figures['stores']}{'' if round_no else ' (warm-up)'}"
            )
            if round_no:
                rounds.append(figures)
    finally:
        for proc in (worker, sender):
            proc.terminate()
            proc.wait(timeout=30)
        listener.stop()
        orthanc.stop()

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 3)

    summary = {
        "median_last_slice_to_sr_s": median("last_slice_to_sr_s"),
        "median_prediction_to_sr_s": median("prediction_to_sr_s"),
        "median_last_slice_to_prediction_s": median("last_slice_to_prediction_s"),
        "median_grad_cam_s": round(
            statistics.median(r["documents"].get("grad_cam_s", 0.0) for r in rounds), 3
        ),
        "median_document_build_s": round(
            statistics.median(r["documents"].get("build_s", 0.0) for r in rounds), 3
        ),
        "median_associate_s": round(statistics.median(r["associate_s"] or 0.0 for r in rounds), 4),
        "median_c_store_total_s": round(
            statistics.median(sum(s for _, s in r["stores"] or []) for r in rounds), 4
        ),
    }
    met = summary["median_last_slice_to_sr_s"] <= GOAL_SECONDS
    print(
        f"median last slice -> SR in PACS {summary['median_last_slice_to_sr_s']:.2f}s over "
        f"{len(rounds)} rounds (goal <= {GOAL_SECONDS:g}s: {'met' if met else 'NOT met'}); "
        f"prediction -> SR {summary['median_prediction_to_sr_s']:.2f}s"
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"delivery-{datetime.now(UTC):%Y%m%d}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "bundle": str(args.bundle),
                "slices": args.slices,
                "key_images": not args.no_key_images,
                "pacs": "Orthanc " + str(orthanc.aet),
                **summary,
                "rounds": rounds,
                "load_average": os.getloadavg(),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"written {out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
