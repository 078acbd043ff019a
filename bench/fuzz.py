"""Hostile input at scale: malformed association requests, command sets and data sets
against real ``triage listen`` processes, and mutated files through the worker's decoder.

    python -m bench.fuzz [--count 10000] [--seed 1] [--paths fast,stock]
                         [--targets association,command,dataset,decode]

Each listener target runs against its own fresh listener process (production defaults but
for the port, fsync off and short timers: association request 2 s, network 10 s), on the
streaming receive path and on pynetdicom's stock path. Printed per target: inputs tried,
crashes (listener exited, decoder process died, an exception escaping the decoder's
never-raise API), hangs (a connection neither answered nor closed 5 s after the fuzzer
stopped writing; a C-STORE without an answer in 30 s; a decode batch past its timeout),
the listener's peak memory growth over idle (``VmHWM``), refusals against quarantined
files (each with its reason), whether a clean 3-slice study sent by DCMTK ``storescu``
right after the run is stored whole, and the time. Inputs are reproducible from
``--seed`` and the index (``bench/fuzz_inputs.py``). Crashing decoder inputs are kept in
``bench/results/fuzz-crashes/``. Results go to ``bench/results/fuzz-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydicom.data import get_testdata_files

from bench import fuzz_inputs as inputs
from bench import fuzz_targets as targets
from bench.dicom_peers import REPO_ROOT, load_average, start_triage
from listener.fastpath.limits import (
    FRAGMENT_OVERHEAD,
    MAX_ASSOCIATION_PDU,
    MAX_COMMAND_BYTES,
    MAX_IN_MEMORY_DATASET,
)
from training.phantom import write_phantom_study
from worker.volume_loader import MAX_DECODED_BYTES

MiB = 1024 * 1024
LISTENER_ENV = {
    "TRIAGE_ASSOCIATION_REQUEST_TIMEOUT": "2",
    "TRIAGE_NETWORK_TIMEOUT": "10",
    "TRIAGE_MAX_INSTANCE_BYTES": str(64 * MiB),
}


def corpus_files() -> list[Path]:
    """Every file of tests/data and pydicom's test files (those with a fuzz context)."""
    ours = sorted((REPO_ROOT / "tests" / "data").glob("*.dcm"))
    theirs = sorted(Path(p) for p in get_testdata_files("*"))
    return ours + [p for p in theirs if p.suffix in ("", ".dcm")]


def _listener_target(
    name: str, fast: bool, count: int, seed: int, corpus: list[inputs.BaseDataset], work: Path
) -> dict[str, Any]:
    folder = work / f"{name}-{'fast' if fast else 'stock'}"
    env = {**LISTENER_ENV, "TRIAGE_DICOM_FAST_PATH": "true" if fast else "false"}
    peer = start_triage(folder, fsync=False, extra_env=env)
    try:
        time.sleep(0.5)
        if name == "association":
            result = targets.fuzz_associations(peer, count, seed)
        elif name == "command":
            result = targets.fuzz_commands(peer, count, seed, corpus)
        else:
            result = targets.fuzz_datasets(peer, count, seed, corpus, folder / "quarantine")
        study = write_phantom_study(folder / "clean", slices=3, size=64, seed=seed + 17)
        targets.wait_until_associable(peer)
        result.clean_study_whole = targets.clean_study_whole(peer, study.files, study.study_uid)
        if not peer.alive():
            result.crashes.append("listener not running after the run")
    finally:
        peer.stop()
    return {"path": "fast" if fast else "stock", **result.as_json()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--paths", default="fast,stock", help="receive paths to fuzz")
    parser.add_argument(
        "--targets", default="association,command,dataset,decode", help="targets to run"
    )
    args = parser.parse_args()
    os.environ.setdefault("RUST_BACKTRACE", "0")  # a decoder panic prints one line, not 60
    chosen = args.targets.split(",")
    started = datetime.now(UTC)
    out = REPO_ROOT / "bench" / "results" / f"fuzz-{date.today():%Y%m%d}.json"
    report: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "seed": args.seed,
        "count": args.count,
        "load_average": load_average(),
        "listener_env": LISTENER_ENV,
        "bounds": {
            "association_pdu_bytes": MAX_ASSOCIATION_PDU,
            "pdata_body_bytes": "advertised max PDU (131072) + 6",
            "command_set_bytes": MAX_COMMAND_BYTES,
            "in_memory_dataset_bytes": MAX_IN_MEMORY_DATASET,
            "fragment_overhead_bytes": FRAGMENT_OVERHEAD,
            "instance_bytes": LISTENER_ENV["TRIAGE_MAX_INSTANCE_BYTES"],
            "decoded_pixel_bytes": MAX_DECODED_BYTES,
            "decoder_address_space": targets.DECODER_MEMORY_LIMIT,
        },
        "results": [],
    }

    def record(row: dict[str, Any]) -> None:
        """Print a row and rewrite the JSON, so a long run interrupted keeps what it did."""
        report["results"].append(row)
        out.write_text(json.dumps(report, indent=1) + "\n")
        _print(row)

    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        work = Path(tmp)
        phantom = write_phantom_study(work / "phantom", slices=3, size=64, seed=args.seed)
        corpus = inputs.load_corpus(corpus_files(), phantom=phantom.files)
        report["corpus"] = len(corpus)
        print(f"corpus: {len(corpus)} data sets from real files and their re-encodings", flush=True)
        paths = args.paths.split(",")
        # The streaming path first, then the decoder, then the (slower) stock path.
        listener_targets = [t for t in chosen if t != "decode"]
        if "fast" in paths:
            for name in listener_targets:
                record(_listener_target(name, True, args.count, args.seed, corpus, work))
        if "decode" in chosen:
            keep = REPO_ROOT / "bench" / "results" / "fuzz-crashes"
            decoded = targets.fuzz_decoding(
                args.count, args.seed, corpus, work / "decode", keep_crashes=keep
            )
            record({"path": "worker", **decoded.as_json()})
        if "stock" in paths:
            for name in listener_targets:
                record(_listener_target(name, False, args.count, args.seed, corpus, work))
    print(f"results: {out.relative_to(REPO_ROOT)}")


def _print(row: dict[str, Any]) -> None:
    memory = (
        f"peak +{row['peak_growth_mib']} MiB"
        if row["peak_growth_mib"] is not None
        else f"peak RSS {row['peak_rss_mib']} MiB"
    )
    print(
        f"{row['target']:11s} {row['path']:6s} inputs {row['inputs']:6d}  "
        f"crashes {len(row['crashes'])}  hangs {len(row['hangs'])}  {memory}  "
        f"refused {row['refused']} quarantined {row['quarantined']}  "
        f"clean study {row['clean_study_whole']}  {row['seconds']} s  "
        f"{'OK' if not row['problems'] else 'PROBLEMS: ' + '; '.join(row['problems'])}",
        flush=True,
    )
    print(f"    outcomes: {json.dumps(row['outcomes'])}", flush=True)


if __name__ == "__main__":
    main()
