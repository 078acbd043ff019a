"""Web app speed with 10,000 studies: the list endpoint and the worklist page, first page.

Run ``python -m bench.web [--studies N] [--rounds R] [--postgres URL]``. For each database
(a fresh SQLite file, and a fresh PostgreSQL database on the local server unless
``--no-postgres``) the studies are written with their results (40-slice score curves,
deliveries for most), the app is served by uvicorn on a free port, and each request is
timed twice: inside the server (an ASGI wrapper around the app, from the request to the
last body byte: the server time the goal is about) and at the client (HTTP round trip on
localhost), and the process CPU per request is kept beside them: on a shared machine the
wall times include waiting for a core (the load average is recorded), the CPU does not.
The first worklist request after start draws and caches every row's slice-curve
thumbnail (``first_request_ms``); later ones reuse them, as a polling worklist does.
Goal: p95 server time <= 100 ms for the first page of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_to_head
from db.models import Delivery, Prediction, Series, Study
from db.users import add_user
from db.vocabulary import DeliveryState, Priority, StudyState, WebRole
from triage.settings import load_settings
from triage.web.app import create_app
from triage.web.server import serve_in_thread, server_for_app

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GOAL_P95_MS = 100.0
CLASSES = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid",
           "subdural", "ischemic")  # fmt: skip
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class ServerTimer:
    """ASGI wrapper recording each HTTP request's time inside the server, by path."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: dict[str, list[float]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                elapsed = time.perf_counter() - started
                self.times.setdefault(scope["path"], []).append(elapsed)

        await self.app(scope, receive, timed_send)


def seed(session: Session, count: int, rng: random.Random) -> None:
    """``count`` studies over 30 days: 5 % critical, 10 % urgent, 75 % routine,
    5 % not assessed, 5 % still without a result; 80 % of results delivered."""
    now = datetime.now(UTC)
    for start in range(0, count, 1000):
        batch = []
        for i in range(start, min(count, start + 1000)):
            received = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
            draw = rng.random()
            priority = (
                Priority.CRITICAL if draw < 0.05 else Priority.URGENT if draw < 0.15
                else Priority.NOT_ASSESSED if draw < 0.20 else None if draw < 0.25
                else Priority.ROUTINE
            )  # fmt: skip
            study = Study(
                study_instance_uid=f"2.25.{uuid.uuid4().int}",
                state=StudyState.RECEIVING if priority is None else StudyState.PREDICTED,
                version=1, calling_aet=f"CT{i % 6}", modality="CT",
                study_description="CT HEAD WO", accession_number=f"A{i:08d}",
                first_received_at=received - timedelta(seconds=20), last_received_at=received,
            )  # fmt: skip
            series = Series(series_instance_uid=f"2.25.{uuid.uuid4().int}", modality="CT")
            study.series.append(series)
            batch.append((study, priority, received))
        session.add_all([s for s, _, _ in batch])
        session.flush()
        predictions = []
        for study, priority, received in batch:
            if priority is None:
                continue
            probs = {c: round(rng.random() * (0.9 if priority == Priority.CRITICAL else 0.3), 4)
                     for c in CLASSES}  # fmt: skip
            curve = [{"index": k, "sop_instance_uid": f"2.25.{k}", "instance_number": k + 1,
                      "scores": {c: round(v * rng.random(), 4) for c, v in probs.items()}}
                     for k in range(40)]  # fmt: skip
            predictions.append(
                Prediction(
                    study_id=study.id, study_version=1,
                    series_instance_uid=study.series[0].series_instance_uid,
                    bundle_name="pacs-triage-demo", bundle_version="0.1.0-synthetic",
                    bundle_sha256="7b" * 32, synthetic_demo=True, shadow=False,
                    probabilities=probs, flags={c: v >= 0.5 for c, v in probs.items()},
                    thresholds=dict.fromkeys(CLASSES, 0.5), priority=priority,
                    slice_scores=curve, timings={"inference_s": 0.3},
                    assessed=priority != Priority.NOT_ASSESSED,
                    created_at=received + timedelta(seconds=3),
                )
            )  # fmt: skip
        session.add_all(predictions)
        session.flush()
        session.add_all(
            Delivery(
                prediction_id=p.id, channel="sr", destination="PACS@10.0.0.5:104",
                state=DeliveryState.SENT, attempts=1,
                acknowledged_at=p.created_at + timedelta(seconds=2),
            )
            for p in predictions
            if rng.random() < 0.8
        )  # fmt: skip
        session.commit()


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def run_one(kind: str, url: str, studies: int, rounds: int, var_dir: Path) -> dict[str, Any]:
    """Seed, serve, time both first pages ``rounds`` times; figures for one database."""
    upgrade_to_head(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    started = time.perf_counter()
    with sessions() as session:
        seed(session, studies, random.Random(12))
        _, token = add_user(session, "bench", WebRole.ADMIN)
        session.commit()
    seeded_s = time.perf_counter() - started
    if kind == "postgresql":
        # A live database is vacuumed by autovacuum; a fresh bulk load is not yet, and its
        # index-only scans would still visit the heap (the worklist rank reads the index).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    settings = load_settings(var_dir=var_dir, database_url=url, web_port=0, web_min_free_mb=0)
    timer = ServerTimer(create_app(settings, sessions))
    server = server_for_app(timer, settings)
    port = serve_in_thread(server)
    figures: dict[str, Any] = {"database": kind, "studies": studies, "seed_s": round(seeded_s, 1)}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            for path in ("/api/studies", "/worklist"):
                t0 = time.perf_counter()
                client.get(path).raise_for_status()  # warm-up: first connection, caches
                first_ms = (time.perf_counter() - t0) * 1000
                timer.times.pop(path, None)
                round_trips = []
                cpu_started = time.process_time()
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    response = client.get(path)
                    round_trips.append(time.perf_counter() - t0)
                    response.raise_for_status()
                cpu_ms = (time.process_time() - cpu_started) / rounds * 1000
                name = "list_endpoint" if path.startswith("/api") else "worklist_page"
                figures[name] = {
                    "path": path,
                    "rows": 50 if path.startswith("/api") else 100,
                    "server": _percentiles(timer.times[path]),
                    "round_trip": _percentiles(round_trips),
                    # CPU of this process (server and client) per request: what the page
                    # costs whatever else the machine runs; wall times include the wait.
                    "cpu_ms_per_request": round(cpu_ms, 1),
                    "bytes": len(response.content),
                    "first_request_ms": round(first_ms, 1),
                }
    finally:
        server.should_exit = True
        time.sleep(0.3)
        engine.dispose()
    return figures


def _postgres_database() -> str:
    name = f"bench_web_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(POSTGRES_ADMIN).set(database=name).render_as_string(hide_password=False)


def _drop(url: str) -> None:
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        results.append(run_one("sqlite", sqlite, args.studies, args.rounds, Path(tmp)))
        if not args.no_postgres:
            url = _postgres_database()
            try:
                results.append(run_one("postgresql", url, args.studies, args.rounds, Path(tmp)))
            finally:
                _drop(url)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"python -m bench.web --studies {args.studies} --rounds {args.rounds}",
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load_average": list(os.getloadavg()),
        "goal": f"first page p95 server time <= {GOAL_P95_MS:g} ms",
        "results": results,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"web-{datetime.now(UTC):%Y%m%d}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    for r in results:
        for name in ("list_endpoint", "worklist_page"):
            f = r[name]
            verdict = "meets" if f["server"]["p95_ms"] <= GOAL_P95_MS else "MISSES"
            print(
                f"{r['database']:<10} {name:<14} server p50 {f['server']['p50_ms']:7.1f} ms "
                f"p95 {f['server']['p95_ms']:7.1f} ms (round trip p95 "
                f"{f['round_trip']['p95_ms']:.1f} ms, CPU {f['cpu_ms_per_request']:.1f} ms/request)"
                f" {verdict} the goal"
            )
    print(f"written {out}")


if __name__ == "__main__":
    main()
