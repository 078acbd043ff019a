"""Ingest benchmark: one 300-slice head CT sent by DCMTK ``storescu`` into triage and storescp.

Run ``python -m bench.ingest`` (or ``make bench``). Each round starts fresh receivers (a
``triage listen`` process with ``TRIAGE_SPOOL_FSYNC=false``, one with the default fsync,
one on pynetdicom's stock receive path (``TRIAGE_DICOM_FAST_PATH=false``, fsync off, so
its row differs from "triage fsync=false" by the receive path alone), and DCMTK
``storescp`` with its default and its largest PDU), sends the same study over
one association to each, in an order that rotates every round, and keeps the medians.
Throughput ratio = t_storescp / t_triage (above 1 means triage is faster). A second part
starts one listener, lets 8 ``storescu`` send distinct studies at once and reads the
listener's peak RSS (VmHWM), and checks that no torch library is mapped in it.

A third part times the spool alone (:class:`listener.spool.Spool`, no network, no
database): the same 300 files written through it with fsync on and off, alternating.
Their difference is what durability costs on this disk before any DICOM is involved,
the floor under "triage fsync=true" minus "triage fsync=false".

Results go to stdout and to ``bench/results/ingest-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.dicom_peers import (
    Peer,
    load_average,
    send,
    spawn_sender,
    start_storescp,
    start_triage,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DCMTK_MAX_PDU = 131072  # the largest receive PDU storescp accepts


@dataclass(frozen=True)
class Receiver:
    """One receiver configuration of the comparison."""

    name: str
    start: Callable[[Path], Peer]
    is_triage: bool


def receivers(max_pdu: int | None, baseline: Path | None = None) -> list[Receiver]:
    """The configurations compared in every round.

    ``baseline``, a checkout of an earlier commit, adds its listener (fsync off) as one
    more row of the same run, so a change's cost is measured side by side, not across
    runs on a machine whose load changes.
    """
    extra = []
    if baseline is not None:
        tree = str(baseline.resolve())
        extra.append(
            Receiver(
                "triage baseline fsync=false",
                lambda d: start_triage(
                    d, fsync=False, max_pdu=max_pdu, extra_env={"PYTHONPATH": tree}, cwd=tree
                ),
                True,
            )
        )
    return extra + [
        Receiver("storescp", lambda d: start_storescp(d), False),
        Receiver("storescp-128k", lambda d: start_storescp(d, max_pdu=DCMTK_MAX_PDU), False),
        Receiver(
            "triage fsync=false", lambda d: start_triage(d, fsync=False, max_pdu=max_pdu), True
        ),
        Receiver("triage fsync=true", lambda d: start_triage(d, fsync=True, max_pdu=max_pdu), True),
        Receiver(
            "triage stock fsync=false",
            lambda d: start_triage(
                d, fsync=False, max_pdu=max_pdu, extra_env={"TRIAGE_DICOM_FAST_PATH": "false"}
            ),
            True,
        ),
    ]


def prepare_study(cache_root: Path, *, slices: int, seed: int) -> list[Path]:
    """Write (once, then reuse) a phantom study; return its files in instance order."""
    folder = cache_root / f"phantom-{slices}-seed{seed}"
    done = folder / ".complete"
    if not done.exists():
        from training.phantom import write_phantom_study

        shutil.rmtree(folder, ignore_errors=True)
        study = write_phantom_study(folder, slices=slices, seed=seed)
        done.write_text("\n".join(str(p) for p in study.files))
    return [Path(line) for line in done.read_text().splitlines()]


def recorded_instances(var_dir: Path) -> int:
    """How many instance rows the listener's SQLite database holds."""
    with sqlite3.connect(var_dir / "triage.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM instances").fetchone()[0])


def stored_files(folder: Path) -> int:
    """Regular files under ``folder`` (temporary dot-files excluded)."""
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


@dataclass(frozen=True)
class Measurement:
    """One send of the study to one receiver."""

    receiver: str
    round: int
    seconds: float
    receiver_cpu_seconds: float
    files: int
    recorded: int | None
    load_before: tuple[float, float, float]


def measure_once(
    receiver: Receiver, files: Sequence[Path], work_root: Path, round_no: int
) -> Measurement:
    """Start the receiver fresh, send the study over one association, verify, clean up."""
    work = Path(tempfile.mkdtemp(prefix="round-", dir=work_root))
    peer = receiver.start(work)
    try:
        load = load_average()
        cpu_before = peer.cpu_seconds()
        result = send(peer.port, files, aet=peer.aet)
        cpu = peer.cpu_seconds() - cpu_before
        if result.returncode != 0:
            raise RuntimeError(f"storescu to {receiver.name} failed:\n{result.output[-2000:]}")
        n_files = stored_files(peer.store_dir)
        recorded = recorded_instances(peer.var_dir) if peer.var_dir else None
        if n_files != len(files) or (recorded is not None and recorded != len(files)):
            raise RuntimeError(
                f"{receiver.name}: {n_files} files and {recorded} rows for {len(files)} sent"
            )
        return Measurement(receiver.name, round_no, result.seconds, cpu, n_files, recorded, load)
    finally:
        peer.stop()
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Summary:
    """Medians over the rounds for one receiver."""

    receiver: str
    rounds: int
    median_seconds: float
    min_seconds: float
    max_seconds: float
    instances_per_second: float
    megabytes_per_second: float
    median_receiver_cpu_seconds: float
    ratio_vs_storescp: float
    ratio_vs_storescp_128k: float


def summarise(measurements: Sequence[Measurement], n_files: int, n_bytes: int) -> list[Summary]:
    """Medians, rates, and ratios t_storescp / t_receiver."""
    by_name: dict[str, list[Measurement]] = {}
    for m in measurements:
        by_name.setdefault(m.receiver, []).append(m)
    medians = {name: statistics.median(m.seconds for m in ms) for name, ms in by_name.items()}
    summaries = []
    for name, ms in by_name.items():
        t = medians[name]
        summaries.append(
            Summary(
                receiver=name,
                rounds=len(ms),
                median_seconds=round(t, 4),
                min_seconds=round(min(m.seconds for m in ms), 4),
                max_seconds=round(max(m.seconds for m in ms), 4),
                instances_per_second=round(n_files / t, 1),
                megabytes_per_second=round(n_bytes / t / 1e6, 1),
                median_receiver_cpu_seconds=round(
                    statistics.median(m.receiver_cpu_seconds for m in ms), 3
                ),
                ratio_vs_storescp=round(medians["storescp"] / t, 3),
                ratio_vs_storescp_128k=round(medians["storescp-128k"] / t, 3),
            )
        )
    return summaries


def print_table(summaries: Sequence[Summary], n_files: int, n_bytes: int) -> None:
    print(f"\nstudy: {n_files} instances, {n_bytes / 1e6:.1f} MB, one association per send")
    header = (
        f"{'receiver':<24} {'median s':>9} {'min s':>7} {'max s':>7} {'inst/s':>8} "
        f"{'MB/s':>7} {'cpu s':>6} {'vs storescp':>12} {'vs 128k':>8}"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        print(
            f"{s.receiver:<24} {s.median_seconds:>9.3f} {s.min_seconds:>7.3f} "
            f"{s.max_seconds:>7.3f} {s.instances_per_second:>8.0f} "
            f"{s.megabytes_per_second:>7.0f} {s.median_receiver_cpu_seconds:>6.2f} "
            f"{s.ratio_vs_storescp:>11.2f}x {s.ratio_vs_storescp_128k:>7.2f}x"
        )


def measure_memory(
    studies: Sequence[Sequence[Path]], work_root: Path, *, fsync: bool, max_pdu: int | None
) -> dict[str, object]:
    """Peak RSS of one listener while len(studies) storescu send at once; torch must be absent."""
    work = Path(tempfile.mkdtemp(prefix="memory-", dir=work_root))
    peer = start_triage(work, fsync=fsync, max_pdu=max_pdu)
    try:
        rss_idle_kib = peer.status_kib("VmRSS")
        start = time.perf_counter()
        senders = [spawn_sender(peer.port, files, aet=peer.aet) for files in studies]
        failures = []
        for proc in senders:
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                failures.append(err.decode("utf-8", "replace")[-500:])
        seconds = time.perf_counter() - start
        hwm_kib = peer.status_kib("VmHWM")
        torch_maps = sorted(p for p in peer.mapped_files() if "torch" in Path(p).name.lower())
        expected = sum(len(s) for s in studies)
        recorded = recorded_instances(work / "var")
        alive = peer.alive()
    finally:
        peer.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "senders": len(studies),
        "instances": expected,
        "recorded": recorded,
        "seconds": round(seconds, 3),
        "fsync": fsync,
        "rss_idle_mb": round(rss_idle_kib / 1024, 1),
        "peak_rss_mb": round(hwm_kib / 1024, 1),
        "goal_mb": 250,
        "torch_libraries_mapped": torch_maps,
        "listener_alive": alive,
        "sender_failures": failures,
    }


def measure_spool_floor(
    files: Sequence[Path], work_root: Path, *, rounds: int
) -> dict[str, dict[str, float]]:
    """Median seconds to write ``files`` through the spool alone, with fsync on and off.

    The bytes are read into memory and their UIDs parsed before the clock starts, so only
    the spool's work is timed: temporary file, write, (fsync), rename, (folder fsync).
    """
    import pydicom

    from listener.spool import Spool

    items = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        items.append((uids, path.read_bytes()))
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_no in range(rounds):
        for fsync in (False, True) if round_no % 2 == 0 else (True, False):
            folder = Path(tempfile.mkdtemp(prefix="spool-floor-", dir=work_root))
            spool = Spool(folder, fsync=fsync)
            start = time.perf_counter()
            for uids, data in items:
                spool.write(*uids, data)
            times[fsync].append(time.perf_counter() - start)
            shutil.rmtree(folder, ignore_errors=True)
    return {
        f"spool fsync={str(fsync).lower()}": {
            "median_seconds": round(statistics.median(t), 4),
            "min_seconds": round(min(t), 4),
            "max_seconds": round(max(t), 4),
        }
        for fsync, t in times.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--sender-slices", type=int, default=100)
    parser.add_argument(
        "--max-pdu", type=int, default=None, help="TRIAGE_MAX_PDU (default: setting's)"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "pacs-triage-bench"
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-floor", action="store_true", help="do not time the spool alone")
    parser.add_argument("--only", nargs="*", help="receiver names to run (storescp always runs)")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="a checkout of an earlier commit to compare"
    )
    args = parser.parse_args(argv)

    args.cache.mkdir(parents=True, exist_ok=True)
    files = prepare_study(args.cache, slices=args.slices, seed=0)
    n_bytes = sum(p.stat().st_size for p in files)
    configs = receivers(args.max_pdu, args.baseline)
    if args.only:
        configs = [c for c in configs if not c.is_triage or c.name in args.only]
    work_root = Path(tempfile.mkdtemp(prefix="pacs-triage-ingest-"))
    measurements: list[Measurement] = []
    load_start = load_average()
    try:
        for round_no in range(args.rounds):
            shift = round_no % len(configs)
            for receiver in configs[shift:] + configs[:shift]:
                m = measure_once(receiver, files, work_root, round_no)
                measurements.append(m)
                print(
                    f"round {round_no + 1}/{args.rounds} {m.receiver:<24} {m.seconds:6.3f} s "
                    f"(receiver cpu {m.receiver_cpu_seconds:.2f} s, load {m.load_before[0]})",
                    flush=True,
                )
        summaries = summarise(measurements, len(files), n_bytes)
        print_table(summaries, len(files), n_bytes)
        floor = None
        if not args.skip_floor:
            floor = measure_spool_floor(files, work_root, rounds=args.rounds)
            print("\nspool alone (no network, no database), same files:")
            for name, figures in floor.items():
                print(
                    f"{name:<20} {figures['median_seconds']:>9.3f} {figures['min_seconds']:>7.3f} "
                    f"{figures['max_seconds']:>7.3f}"
                )
        memory = None
        if not args.skip_memory:
            studies = [
                prepare_study(args.cache, slices=args.sender_slices, seed=100 + i)
                for i in range(args.senders)
            ]
            memory = measure_memory(studies, work_root, fsync=True, max_pdu=args.max_pdu)
            print(
                f"\npeak RSS with {memory['senders']} concurrent senders "
                f"({memory['instances']} instances, {memory['seconds']} s): "
                f"{memory['peak_rss_mb']} MB (idle {memory['rss_idle_mb']} MB, goal <= 250 MB); "
                f"torch mapped: {memory['torch_libraries_mapped'] or 'no'}; "
                f"recorded {memory['recorded']}/{memory['instances']}"
            )
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    load_end = load_average()
    print(f"load average at start {load_start}, at end {load_end} (2 cores)")

    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC)
        out = RESULTS_DIR / f"ingest-{stamp:%Y%m%d}.json"
        serial = 2
        while out.exists():  # a second run the same day keeps the first one's results
            out = RESULTS_DIR / f"ingest-{stamp:%Y%m%d}-{serial}.json"
            serial += 1
        out.write_text(
            json.dumps(
                {
                    "at": stamp.isoformat(timespec="seconds"),
                    "host": {
                        "cpus": 2,
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                    },
                    "study": {"instances": len(files), "bytes": n_bytes, "slices": args.slices},
                    "load_average": {"start": load_start, "end": load_end},
                    "summary": [asdict(s) for s in summaries],
                    "measurements": [asdict(m) for m in measurements],
                    "memory": memory,
                    "spool_floor": floor,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
