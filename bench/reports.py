"""Result documents: how long key images, the SR/SC/KOS build and the durable write take.

Run ``python -m bench.reports [--bundle DIR] [--slices N] [--rounds R] [--k K]``. A
synthetic subdural phantom (512 x 512, the size scanners send) is read and scored once,
as the study task does; then each round renders the Grad-CAM key images from the model
input inference kept (``render_key_images``; for comparison also from the decoded slices,
``key_images_for_series``), reads the headers the report names, builds the documents
(``build_result_documents``) with and without key images, and writes them as fsynced
Part 10 files. Medians are printed with where the time
goes. Budget: the issue's goal is last slice -> SR in the PACS within 5 s, of which the
prediction takes about 1.1 s (``bench.e2e``), so the documents should stay well under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import torch
from pydicom.dataset import Dataset

from training.bundle import Bundle, load_bundle
from training.phantom import write_phantom_study
from worker.priority import Triage, triage
from worker.reports import (
    KeyImage,
    ReportInput,
    build_result_documents,
    key_slice_uids,
    write_documents,
)
from worker.reports.key_images import key_images_for_series, render_key_images
from worker.study_inference import StudyResult, infer_series
from worker.volume_loader import read_series

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "worker" / "bundles" / "demo"


def assessed_input(
    bundle: Bundle,
    result: StudyResult,
    verdict: Triage,
    headers: Sequence[Dataset],
    keys: Sequence[KeyImage],
) -> ReportInput:
    """The input the worker would build for this read (first header: the series read)."""
    return ReportInput(
        headers=tuple(headers),
        class_names=bundle.class_names,
        study_version=1,
        bundle_name=bundle.name,
        bundle_version=bundle.version,
        bundle_sha256=bundle.sha256,
        synthetic_demo=bundle.synthetic_demo,
        assessed=True,
        priority=str(verdict.priority),
        probabilities=result.study_probabilities,
        flags=verdict.flags,
        thresholds=verdict.thresholds,
        slice_scores=tuple(result.slice_scores),
        series_instance_uid=str(headers[0].SeriesInstanceUID),
        key_images=tuple(keys),
        created_at=datetime.now(UTC),
    )


def _round(
    files: list[Path], datasets: list[Dataset], bundle: Bundle, k: int, out: Path
) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    result = infer_series(bundle, datasets, device="cpu", batch_size=16, keep_input=True)
    assert result.model_input is not None
    verdict = triage(result.study_probabilities, bundle.thresholds)
    started = time.perf_counter()
    key_images_for_series(  # the fallback: preprocess the decoded slices once more
        bundle,
        datasets,
        result.slice_scores,
        flags=verdict.flags,
        probabilities=result.study_probabilities,
        k=k,
    )
    reprocessed = time.perf_counter()
    keys = render_key_images(  # what the worker does: Grad-CAM on the input it kept
        bundle,
        result.model_input,
        result.slice_scores,
        bundle.class_names,
        k,
        flags=verdict.flags,
        probabilities=result.study_probabilities,
        demo_label=bundle.disclaimer if bundle.synthetic_demo else None,
    )
    rendered = time.perf_counter()
    named = key_slice_uids(
        result.slice_scores, bundle.class_names, verdict.flags, result.study_probabilities, k
    )
    paths = {p.stem: p for p in files}  # phantom files are named by SOP Instance UID
    wanted = dict.fromkeys([files[0].stem, *named])
    headers = tuple(pydicom.dcmread(paths[uid], stop_before_pixels=True) for uid in wanted)
    read = time.perf_counter()
    inp = assessed_input(bundle, result, verdict, headers, keys)
    build_result_documents(inp, key_images=False)
    built_sr = time.perf_counter()
    docs = build_result_documents(inp)
    built = time.perf_counter()
    write_documents(docs, out)
    written = time.perf_counter()
    return {
        "key_images_s": rendered - reprocessed,
        "key_images_reprocess_s": reprocessed - started,
        "read_headers_s": read - rendered,
        "build_sr_only_s": built_sr - read,
        "build_all_s": built - built_sr,
        "write_all_s": written - built,
        "total_s": written - reprocessed - (built_sr - read),
        "bytes": float(sum(p.stat().st_size for p in out.iterdir())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    work = Path(tempfile.mkdtemp(prefix="bench-reports-"))
    try:
        study = write_phantom_study(work / "raw", slices=args.slices, lesions=("subdural",), seed=3)
        files = list(study.files)
        datasets = read_series(files, threads=args.threads)
        _round(files, datasets, bundle, args.k, work / "out")  # warm-up
        rounds = [_round(files, datasets, bundle, args.k, work / "out") for _ in range(args.rounds)]
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {os.cpu_count()} cores, torch threads {args.threads}",
            "bundle": f"{bundle.name} {bundle.version} ({bundle.sha256[:12]})",
            "slices": args.slices,
            "key_images": args.k,
            "rounds": args.rounds,
            "load_average": os.getloadavg(),
            "medians": med,
        }
        print(
            f"bundle {report['bundle']}; {args.slices} slices 512x512, k={args.k}, "
            f"medians of {args.rounds}"
        )
        for key, value in med.items():
            shown = f"{value / 1024:.0f} KiB" if key == "bytes" else f"{value * 1000:.0f} ms"
            print(f"  {key:<18}{shown:>12}")
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"reports-{datetime.now(UTC):%Y%m%d}.json"
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"written {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
