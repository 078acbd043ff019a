"""Worker throughput: slices per second through decode + preprocessing + both model stages.

Run ``python -m bench.worker [--bundle DIR] [--slices N] [--rounds R]``. A synthetic
phantom series is written once (uncompressed, and JPEG-LS lossless via DCMTK ``dcmcjpls``
to include a real decoder); each round reads and decodes the files, preprocesses them with
the bundle's spec and runs the image model in batches and the sequence model over the
series, exactly as the study task does (``worker.volume_loader`` + ``worker.study_inference``).
Medians are reported with where the time goes. Goal on 2 CPU cores: >= 40 slices/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from training.bundle import load_bundle
from training.phantom import write_phantom_study
from worker.runtime import choose_device
from worker.study_inference import infer_series
from worker.volume_loader import read_series

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "worker" / "bundles" / "demo"
GOAL_CPU = 40.0


def _jpegls_copy(files: list[Path], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in files:
        target = out / path.name
        subprocess.run(["dcmcjpls", str(path), str(target)], check=True, capture_output=True)
        copies.append(target)
    return copies


def _round(files: list[Path], bundle, device: str, batch: int, threads: int) -> dict[str, float]:
    started = time.perf_counter()
    datasets = read_series(files, threads=threads)
    decoded = time.perf_counter()
    result = infer_series(bundle, datasets, device=device, batch_size=batch)
    total = time.perf_counter() - started
    return {
        "decode_s": decoded - started,
        "preprocess_s": result.preprocess_seconds,
        "inference_s": result.inference_seconds,
        "total_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    bundle = load_bundle(args.bundle)
    bundle.image_model.to(device).eval()
    bundle.sequence_model.to(device).eval()
    work = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    try:
        study = write_phantom_study(work / "raw", slices=args.slices, lesions=("subdural",), seed=3)
        variants = {"explicit VR LE": list(study.files)}
        if shutil.which("dcmcjpls"):
            variants["JPEG-LS lossless"] = _jpegls_copy(list(study.files), work / "jls")
        _round(variants["explicit VR LE"][:4], bundle, device, args.batch, args.threads)  # warm-up
        report: dict[str, object] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {os.cpu_count()} cores, torch threads {args.threads}",
            "device": device,
            "bundle": f"{bundle.name} {bundle.version} ({bundle.sha256[:12]})",
            "image_arch": bundle.config["image_model"]["arch"],
            "input_size": bundle.preprocess.size,
            "slices": args.slices,
            "batch": args.batch,
            "load_average": os.getloadavg(),
            "variants": {},
        }
        print(f"bundle {report['bundle']} on {device}; {args.slices} slices, {args.rounds} rounds")
        print(
            f"{'encoding':<18}{'decode s':>10}{'prep s':>10}{'model s':>10}{'total s':>10}"
            f"{'slices/s':>10}{'vs goal':>9}"
        )
        for name, files in variants.items():
            rounds = [
                _round(files, bundle, device, args.batch, args.threads) for _ in range(args.rounds)
            ]
            med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
            rate = args.slices / med["total_s"]
            med["slices_per_s"] = rate
            report["variants"][name] = med  # type: ignore[index]
            print(
                f"{name:<18}{med['decode_s']:>10.3f}{med['preprocess_s']:>10.3f}"
                f"{med['inference_s']:>10.3f}{med['total_s']:>10.3f}{rate:>10.1f}"
                f"{rate / GOAL_CPU:>8.2f}x"
            )
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"worker-{device}-{datetime.now(UTC):%Y%m%d}.json"
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"written {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
