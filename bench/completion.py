"""How long after its last instance does a study complete, and by which rule?

Run ``python -m bench.completion ../shared/data`` (``--runs 3`` by default). Each study
goes to a fresh ``triage listen`` with the shipped timers (idle 60 s, quiet 3 s) over one
storescu association, as a scanner sends it: the real studies (the Philips study's scout,
head series and dose pages together; the GE two-part head) read where they lie, then every
layout of :mod:`training.phantom_layouts`. The figures come from the listener's own
database: last instance stored → study completed (``completed_at``) → queued (the
``study_queued`` audit event), with the rule from the ``study_completed`` event. Medians
of the runs are printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.dicom_peers import send, start_triage

REAL_STUDIES = {
    "philips scout+head+dose": (
        "headct-philips-phantom-study/S1000",
        "headct-philips-phantom-study/S2010",
        "headct-philips-phantom-study/S4010",
    ),
    "ge two-part head": ("headct-ge-human-tilt",),
}
_SKIP = {"PROVENANCE.md", "SHA256SUMS"}


@dataclass(frozen=True)
class Run:
    """One study sent once: seconds from the last instance to complete and to queued."""

    to_complete: float | None
    to_queued: float | None
    basis: str | None


def _when(value: object) -> datetime:
    return datetime.fromisoformat(str(value))


def _measure(db_path: Path) -> Run | None:
    with sqlite3.connect(db_path) as db:
        row = db.execute(
            "SELECT study_instance_uid, last_received_at, completed_at FROM studies"
        ).fetchone()
        if row is None or row[2] is None:
            return None
        uid, last, completed = row
        events = dict(
            db.execute(
                "SELECT event_type, at FROM audit_events WHERE study_instance_uid = ? "
                "AND event_type IN ('study_completed', 'study_queued') ORDER BY id",
                (uid,),
            ).fetchall()
        )
        (detail,) = db.execute(
            "SELECT detail FROM audit_events WHERE event_type = 'study_completed' "
            "AND study_instance_uid = ?",
            (uid,),
        ).fetchone()
    start = _when(last)
    queued = events.get("study_queued")
    return Run(
        (_when(completed) - start).total_seconds(),
        (_when(queued) - start).total_seconds() if queued else None,
        json.loads(detail).get("basis") if isinstance(detail, str) else detail.get("basis"),
    )


def send_once(files: Sequence[Path], timeout: float = 90.0) -> Run:
    """Send ``files`` over one association to a fresh listener and wait for completion."""
    work = Path(tempfile.mkdtemp(prefix="pacs-triage-completion-"))
    peer = start_triage(work, fsync=False)
    try:
        result = send(peer.port, files, aet=peer.aet)
        if result.returncode != 0:
            raise RuntimeError(f"storescu failed: {result.output[-400:]}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = _measure(work / "var" / "triage.sqlite")
            if run is not None and run.to_queued is not None:
                return run
            time.sleep(0.2)
        return _measure(work / "var" / "triage.sqlite") or Run(None, None, None)
    finally:
        peer.stop()
        shutil.rmtree(work, ignore_errors=True)


def study_files(root: Path, folders: Sequence[str]) -> list[Path]:
    """The DICOM files of a real study's folders under ``root``, in name order."""
    return [
        p
        for folder in folders
        for p in sorted((root / folder).iterdir())
        if p.is_file() and p.name not in _SKIP
    ]


def _median(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):6.2f}" if known else "     -"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    from training.phantom_layouts import LAYOUTS, write_layout

    studies = {
        name: study_files(args.root, folders)
        for name, folders in REAL_STUDIES.items()
        if all((args.root / f).is_dir() for f in folders)
    }
    layout_dir = Path(tempfile.mkdtemp(prefix="pacs-triage-layouts-"))
    try:
        for name in LAYOUTS:
            studies[f"layout {name}"] = write_layout(layout_dir / name, name).files
        print(f"{'study':<28} {'files':>5} {'rule':<12} {'->complete s':>12} {'->queued s':>10}")
        for name, files in studies.items():
            runs = [send_once(files) for _ in range(args.runs)]
            rules = sorted({r.basis or "-" for r in runs})
            print(
                f"{name:<28} {len(files):>5} {'/'.join(rules):<12} "
                f"{_median([r.to_complete for r in runs]):>12} "
                f"{_median([r.to_queued for r in runs]):>10}"
            )
    finally:
        shutil.rmtree(layout_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
