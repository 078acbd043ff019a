"""Real studies: the result documents of every real CT series, judged by dicom3tools.

Run ``python -m bench.reports_realdata ../shared/data``. Each CT series (up to ``--slices``
slices of it) is decoded, scored by the bundle through ``infer_series`` as the worker does,
given Grad-CAM key images, and turned into SR + key images + KOS; ``dciodvfy`` then
judges every document. Series the worker would refuse (multi-frame, colour, undecodable)
are listed with the reason; sources whose UIDs are not UIDs are refused by the builder
(the listener never accepts them). Exit status 1 when any document has a dciodvfy error.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from bench.reports import DEMO_BUNDLE, assessed_input
from training.bundle import Bundle, load_bundle
from worker.priority import triage
from worker.reports import build_result_documents, key_slice_uids, write_documents
from worker.reports.key_images import render_key_images
from worker.study_inference import infer_series


def ct_series(root: Path) -> dict[tuple[str, str], list[Path]]:
    """CT files under ``root`` by (top folder, Series Instance UID)."""
    found: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if str(ds.get("Modality", "")) == "CT" and ds.get("SeriesInstanceUID"):
            found[(path.relative_to(root).parts[0], str(ds.SeriesInstanceUID))].append(path)
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def judge(bundle: Bundle, files: list[Path], out: Path, k: int) -> tuple[str, list[str]]:
    """(what happened, every dciodvfy error of every document) for one series."""
    datasets = [pydicom.dcmread(path) for path in files]
    result = infer_series(bundle, datasets, device="cpu", batch_size=16, keep_input=True)
    verdict = triage(result.study_probabilities, bundle.thresholds)
    keys = render_key_images(
        bundle,
        result.model_input,  # type: ignore[arg-type]
        result.slice_scores,
        bundle.class_names,
        k,
        flags=verdict.flags,
        probabilities=result.study_probabilities,
        demo_label=bundle.disclaimer if bundle.synthetic_demo else None,
    )
    by_uid = {str(ds.SOPInstanceUID): Path(str(ds.filename)) for ds in datasets}
    named = key_slice_uids(
        result.slice_scores, bundle.class_names, verdict.flags, result.study_probabilities, k
    )
    wanted = dict.fromkeys([str(datasets[0].SOPInstanceUID), *named])
    headers = [pydicom.dcmread(by_uid[uid], stop_before_pixels=True) for uid in wanted]
    docs = build_result_documents(assessed_input(bundle, result, verdict, headers, keys))
    errors = [e for path in write_documents(docs, out) for e in dciodvfy_errors(path)]
    kinds = ", ".join(kind for kind, _ in docs.items())
    return f"{verdict.priority}; {kinds}", errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # pydicom's complaints about the malformed corpus
    bundle = load_bundle(args.bundle)
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-reports-real-") as work:
        for index, ((folder, series), files) in enumerate(sorted(ct_series(args.root).items())):
            try:
                outcome, errors = judge(
                    bundle, files[: args.slices], Path(work) / str(index), args.k
                )
            except ValueError as exc:  # refused as the worker or builder refuses it
                print(f"{folder:<30}{len(files):>4} refused: {str(exc)[:90]}")
                continue
            failed |= bool(errors)
            verdict = "no dciodvfy errors" if not errors else f"{len(errors)} errors: {errors[0]}"
            print(f"{folder:<30}{len(files):>4} {outcome}: {verdict}")
            del series
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
