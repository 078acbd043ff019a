"""The cluster scenario: one machine standing in for many, 50 studies from 4 senders at once.

Run ``python -m bench.cluster [--studies 50] [--senders 4] [--workers 3]``. Starts the
listener, 3 inference worker processes, the delivery worker, Orthanc as the destination
PACS, on the machine's PostgreSQL (a fresh database) and Redis (an emptied db number), then
4 concurrent DCMTK ``storescu`` senders push phantom studies of mixed layouts (plain axial
head series with and without lesions, and the scanner layouts of
:mod:`training.phantom_layouts`: localizer first, two-part head, bone kernel, coronal MPR,
dose page, vertex first). It waits for every study's SR in Orthanc and prints studies sent,
predicted, delivered, duplicates and lost, throughput, and the p50/p95 of last image -> SR
in Orthanc (the clock starts when the study's last ``storescu`` exits).

Pass: every study has exactly one current prediction and exactly one SR that Orthanc holds
once; nothing acknowledged by the listener is missing from the database.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.dicom_peers import send
from bench.stack import (
    Stack,
    drop_postgres_database,
    fresh_postgres_database,
    fresh_redis_url,
    start_stack,
    wait_for,
)
from training.phantom import write_phantom_study
from training.phantom_layouts import LAYOUTS, write_layout

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# The missing-slice layout waits out the idle timer by design: it is the completion bench's.
CLUSTER_LAYOUTS = [name for name in LAYOUTS if name != "missing_slice"]
LESIONS = ((), ("intraparenchymal",), ("subdural",), ("epidural",), ("subarachnoid",))


@dataclass
class Planned:
    """One study to send: its UID, files, and the layout it stands for."""

    study_uid: str
    files: list[Path]
    kind: str
    sent_at: float | None = None
    send_ok: bool = False


def plan_studies(out: Path, count: int) -> list[Planned]:
    """Half plain 24-slice head series (mixed findings), half scanner layouts, interleaved."""
    planned: list[Planned] = []
    for index in range(count):
        folder = out / f"study{index:03d}"
        if index % 2 == 0:
            lesions = LESIONS[(index // 2) % len(LESIONS)]
            study = write_phantom_study(
                folder, slices=24, size=256, lesions=lesions, seed=1000 + index
            )
            planned.append(
                Planned(study.study_uid, list(study.files), "+".join(lesions) or "normal")
            )
        else:
            name = CLUSTER_LAYOUTS[(index // 2) % len(CLUSTER_LAYOUTS)]
            layout = write_layout(folder, name, seed=1000 + index)
            planned.append(Planned(layout.study_uid, list(layout.files), name))
    return planned


def _sender(port: int, work: queue.Queue[Planned]) -> None:
    while True:
        try:
            study = work.get_nowait()
        except queue.Empty:
            return
        result = send(port, study.files, aet="TRIAGE")
        study.sent_at = time.time()
        study.send_ok = result.returncode == 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario once and return its figures."""
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    database_url = fresh_postgres_database()
    stack: Stack | None = None
    try:
        planned = plan_studies(work / "studies", args.studies)
        slices = sum(len(p.files) for p in planned)
        stack = start_stack(
            work / "system",
            database_url=database_url,
            broker_url=fresh_redis_url(args.redis_db),
            workers=args.workers,
        )
        assert stack.listener is not None
        todo: queue.Queue[Planned] = queue.Queue()
        for study in planned:
            todo.put(study)
        started = time.time()
        threads = [
            threading.Thread(target=_sender, args=(stack.listener.port, todo))
            for _ in range(args.senders)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent_done = time.time()
        sr_seen: dict[str, float] = {}

        def all_in_orthanc() -> bool:
            for study in planned:
                if study.study_uid in sr_seen:
                    continue
                assert stack is not None
                outcome = stack.outcome(study.study_uid)
                if outcome.sent_sr_uids and stack.sr_copies_in_orthanc(outcome.sent_sr_uids[0]):
                    sr_seen[study.study_uid] = time.time()
            return len(sr_seen) == len(planned)

        wait_for(all_in_orthanc, args.timeout, interval=0.25)
        finished = time.time()
        outcomes = [stack.outcome(p.study_uid) for p in planned]
        latencies = [
            sr_seen[p.study_uid] - p.sent_at
            for p in planned
            if p.study_uid in sr_seen and p.sent_at is not None
        ]
        predicted = sum(1 for o in outcomes if o.predictions >= 1)
        delivered = sum(1 for p in planned if p.study_uid in sr_seen)
        duplicate_predictions = sum(max(0, o.predictions - 1) for o in outcomes)
        duplicate_srs = sum(
            max(0, stack.sr_copies_in_orthanc(uid) - 1) for o in outcomes for uid in o.sent_sr_uids
        )
        stored = sum(o.instances for o in outcomes)
        quantiles = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [0.0] * 19
        minutes = (finished - started) / 60
        figures = {
            "studies_sent": sum(1 for p in planned if p.send_ok),
            "studies": len(planned),
            "slices_sent": slices,
            "instances_stored": stored,
            "predicted": predicted,
            "delivered_sr_in_orthanc": delivered,
            "duplicate_predictions": duplicate_predictions,
            "duplicate_srs_in_orthanc": duplicate_srs,
            "lost": len(planned) - delivered,
            "senders": args.senders,
            "workers": args.workers,
            "send_wall_s": round(sent_done - started, 1),
            "wall_s": round(finished - started, 1),
            "studies_per_minute": round(delivered / minutes, 2) if minutes else 0.0,
            "slices_per_second": round(slices / (finished - started), 2),
            "last_image_to_sr_p50_s": round(statistics.median(latencies), 2) if latencies else None,
            "last_image_to_sr_p95_s": round(quantiles[18], 2) if latencies else None,
            "kinds": sorted({p.kind for p in planned}),
            "load_average": os.getloadavg(),
        }
        return figures
    finally:
        if stack is not None:
            stack.stop()
        drop_postgres_database(database_url)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="Keep the work folder and logs.")
    args = parser.parse_args()
    figures = run(args)
    for key, value in figures.items():
        print(f"{key:<28} {value}")
    passed = (
        figures["lost"] == 0
        and figures["duplicate_predictions"] == 0
        and figures["duplicate_srs_in_orthanc"] == 0
        and figures["studies_sent"] == figures["studies"]
    )
    print(f"cluster: {'PASS' if passed else 'FAIL'}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"cluster-{datetime.now(UTC):%Y%m%d}.json"
    out.write_text(json.dumps({"date": datetime.now(UTC).isoformat(), **figures}, indent=1) + "\n")
    print(f"written {out}")
    raise SystemExit(0 if passed else 1)


if __name__ == "__main__":
    main()
