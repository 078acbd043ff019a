"""Real-data inference check: real head CT through the whole path, real ICH slices scored.

Run ``python -m bench.realdata_inference ../shared/data`` (``make realdata`` runs it after
``bench.realdata``). Two stages:

1. ``studies``: the real GE head series (gantry tilt, uneven spacing) and the Philips study
   as a scanner sends it (localizer, head series, dose screenshots) go through
   ``triage listen`` and a ``triage worker`` with the deployed bundle; each must end with a
   prediction, and series selection must pick the axial head series.
2. ``slices``: the RSNA slices and the CT-ICH hemorrhage slices are scored one by one with
   the same code the worker runs, and printed beside their labels, whatever the scores are.
   The demo bundle never saw real data: these figures say how it does, not that it works.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select

from bench.dicom_peers import REPO_ROOT, send, start_triage
from db.engine import make_engine, make_session_factory
from db.models import Prediction, Study
from db.vocabulary import StudyState
from training.bundle import load_bundle
from worker.study_inference import infer_series

DEMO_BUNDLE = REPO_ROOT / "worker" / "bundles" / "demo"
STUDY_FOLDERS = {
    "GE head, gantry tilt": ["headct-ge-human-tilt"],
    "Philips study": [
        "headct-philips-phantom-study/S1000",
        "headct-philips-phantom-study/S2010",
        "headct-philips-phantom-study/S4010",
    ],
}
EXPECTED_SERIES_FOLDER = {
    "GE head, gantry tilt": "headct-ge-human-tilt",
    "Philips study": "headct-philips-phantom-study/S2010",
}
SHOWN = (
    "any",
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
    "ischemic",
)


@dataclass
class StudyOutcome:
    name: str
    state: str
    reason: str
    series_ok: bool
    priority: str
    probabilities: dict[str, float]
    assessed: bool = False
    in_domain: bool = False
    domain_score: float | None = None
    reasons: tuple[str, ...] = ()


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name not in {"PROVENANCE.md", "SHA256SUMS", "labels.csv"}
    )


def studies(root: Path, bundle: Path) -> list[StudyOutcome]:
    """Send each real study through listener and worker; return what was stored."""
    work = Path(tempfile.mkdtemp(prefix="realdata-inference-"))
    env = {
        "TRIAGE_MODEL_BUNDLE": str(bundle),
        "TRIAGE_STABLE_SECONDS": "5",
        "TRIAGE_VAR_DIR": str(work / "var"),
        "TRIAGE_DATABASE_URL": f"sqlite:///{work / 'var' / 'triage.sqlite'}",
    }
    listener = start_triage(work, fsync=True, extra_env=env)
    log = open(work / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "triage.cli", "worker", "--pool", "solo", "--no-reconcile"],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            **env,
            "PYTHONPATH": str(REPO_ROOT),
            "TRIAGE_SPOOL_DIR": str(work / "spool"),
        },
    )
    sessions = make_session_factory(make_engine(env["TRIAGE_DATABASE_URL"]))
    outcomes = []
    try:
        for name, folders in STUDY_FOLDERS.items():
            files = [f for folder in folders for f in _dicom_files(root / folder)]
            result = send(listener.port, files, aet="TRIAGE")
            if result.returncode != 0:
                print(f"{name}: storescu exit {result.returncode}: {result.output[-300:]}")
            study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
            expected_series = str(
                dcmread(
                    _dicom_files(root / EXPECTED_SERIES_FOLDER[name])[0], stop_before_pixels=True
                ).SeriesInstanceUID
            )
            deadline = time.monotonic() + 240
            study = prediction = None
            while time.monotonic() < deadline:
                with sessions() as session:
                    study = session.scalars(
                        select(Study).where(Study.study_instance_uid == study_uid)
                    ).one_or_none()
                    prediction = session.scalars(
                        select(Prediction)
                        .join(Study, Study.id == Prediction.study_id)
                        .where(Study.study_instance_uid == study_uid)
                    ).first()
                if prediction is not None or (study and study.state == StudyState.FAILED):
                    break
                time.sleep(0.5)
            outcomes.append(
                StudyOutcome(
                    name,
                    study.state.value if study else "missing",
                    (
                        prediction.timings.get("selection")
                        if prediction
                        else (study.state_reason if study else "never arrived")
                    )
                    or "",
                    bool(prediction and prediction.series_instance_uid == expected_series),
                    prediction.priority if prediction else "-",
                    dict(prediction.probabilities) if prediction else {},
                    bool(prediction and prediction.assessed),
                    bool(prediction and prediction.in_domain),
                    prediction.domain_score if prediction else None,
                    tuple(prediction.reasons or ()) if prediction else (),
                )
            )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
        listener.stop()
    return outcomes


def slices(root: Path, bundle_path: Path) -> list[tuple[str, str, dict[str, float]]]:
    """Score each real hemorrhage/RSNA slice alone; (file, label, probabilities)."""
    bundle = load_bundle(bundle_path)
    labels: dict[str, str] = {}
    with open(root / "rsna-ich-slices" / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            positive = [c for c in SHOWN[1:] if row.get(c) == "1"]
            labels[row["image_id"]] = ",".join(positive) or (
                "any" if row.get("any") == "1" else "none"
            )
    scored = []
    for path in _dicom_files(root / "rsna-ich-slices"):
        result = infer_series(bundle, [dcmread(path)], device="cpu", batch_size=16)
        scored.append((f"rsna/{path.name}", labels.get(path.stem, "?"), result.study_probabilities))
    for path in _dicom_files(root / "ctich-physionet-hemorrhage" / "images"):
        ds = dcmread(path)
        result = infer_series(bundle, [ds], device="cpu", batch_size=16)
        scored.append((f"ct-ich/{path.name}", "ICH (mask)", result.study_probabilities))
    return scored


def report(
    outcomes: list[StudyOutcome], scored: list[tuple[str, str, dict[str, float]]], bundle_path: Path
) -> int:
    bundle = load_bundle(bundle_path)
    print(
        f"\nbundle {bundle.name} {bundle.version} sha256 {bundle.sha256[:16]}"
        f"{'  [SYNTHETIC DEMO - NOT FOR CLINICAL USE]' if bundle.synthetic_demo else ''}"
    )
    print("\n== real studies through listener and worker ==")
    print(f"{'study':<24}{'state':<11}{'series ok':<10}{'priority':<10}selection / reason")
    for o in outcomes:
        print(f"{o.name:<24}{o.state:<11}{str(o.series_ok):<10}{o.priority:<14}{o.reason}")
        score = f"{o.domain_score:.2f}" if o.domain_score is not None else "-"
        print(" " * 24 + f"assessed={o.assessed} in_domain={o.in_domain} domain_score={score}")
        if o.assessed and o.probabilities:
            print(" " * 24 + "  ".join(f"{k[:6]}={o.probabilities[k]:.3f}" for k in SHOWN))
        for reason in o.reasons:
            print(" " * 24 + f"reason: {reason}")
    print(
        "\n== real slices scored alone: raw model output, no adequacy or domain gate "
        "(the worker reports such inputs as not assessed) =="
    )
    header = "".join(f"{k[:7]:>9}" for k in SHOWN)
    print(f"{'file':<26}{'label':<22}{header}")
    for name, label, probs in scored:
        print(f"{name:<26}{label[:21]:<22}" + "".join(f"{probs[k]:>9.3f}" for k in SHOWN))
    bad = [o for o in outcomes if o.state != "predicted" or not o.series_ok]
    if bad:
        print(f"\nPROBLEMS: {[o.name for o in bad]}")
    return 1 if bad else 0


def main() -> int:
    warnings.simplefilter("ignore", UserWarning)  # pydicom on the real files' odd values
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path, nargs="?", default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    args = parser.parse_args()
    root = args.root.resolve()
    outcomes = studies(root, args.bundle)
    scored = slices(root, args.bundle)
    return report(outcomes, scored, args.bundle)


if __name__ == "__main__":
    raise SystemExit(main())
