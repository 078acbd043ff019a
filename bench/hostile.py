"""Hostile peers against a real ``triage listen`` process: peak memory, lock-out time, answers.

Each attack of issue #13 runs against a fresh listener process (production defaults but
for the port, fsync off) so its peak resident memory (``VmHWM``) belongs to that attack
alone. Printed: the listener's peak memory growth over its idle size, whether and how
fast the attacking connection was closed, and how long a real DCMTK ``storescu`` needs
to store a 3-slice study while the attack is still open (compared with no attack).

    python -m bench.hostile [--answers 400] [--only idle_500_with_churn,association_limit]

Floods (issue #14): 500 idle TCP connections plus two threads opening and dropping (RST)
associations as fast as they can, while storescu sends a 40-slice study; and every
association slot held, to see the next caller rejected with an A-ASSOCIATE-RJ at once.

Results go to ``bench/results/hostile-<date>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from bench import hostile_peers as hostile
from bench.dicom_peers import REPO_ROOT, Peer, send, start_triage
from bench.fuzz_peer import RawAssociation, associate_rq, churn_associations
from training.phantom import write_phantom_study

MiB = 1024 * 1024
Attack = Callable[[Peer], dict[str, Any]]


def _closed_within(sock: Any, timeout: float) -> tuple[bool, float, bytes]:
    started = time.monotonic()
    answer, closed = hostile.read_until_closed(sock, timeout)
    return closed, round(time.monotonic() - started, 2), answer


def declared_association_pdu(peer: Peer) -> dict[str, Any]:
    """Three connections declaring a 1 GiB A-ASSOCIATE-RQ and one 4 GiB, then silence."""
    socks = [hostile.connect(peer.port) for _ in range(4)]
    for sock, size in zip(socks, [1 << 30, 1 << 30, 1 << 30, 0xFFFFFFFF], strict=True):
        sock.sendall(hostile.pdu_header(0x01, size))
    results = [_closed_within(sock, 10) for sock in socks]
    for sock in socks:
        sock.close()
    return {
        "closed": all(r[0] for r in results),
        "max_close_s": max(r[1] for r in results),
        "aborts": sum(hostile.abort_pdus(r[2]) for r in results),
    }


def declared_pdata(peer: Peer) -> dict[str, Any]:
    """A P-DATA-TF header declaring 4 GiB on an accepted association."""
    with hostile.associated(peer.port) as assoc:
        started = time.monotonic()
        hostile.raw_socket(assoc).sendall(hostile.pdu_header(0x04, 0xFFFFFFFF))
        aborted = hostile.wait_aborted(assoc, 10)
        return {"aborted": aborted, "close_s": round(time.monotonic() - started, 2)}


def _storescu_seconds(peer: Peer, files: list[Path]) -> tuple[bool, float]:
    sent = send(peer.port, files, aet=peer.aet)
    return sent.returncode == 0, round(sent.seconds, 3)


def stalled_connections(files: list[Path]) -> Attack:
    def attack(peer: Peer) -> dict[str, Any]:
        """20 connections sending ``01 00 00`` and stopping; then a real sender."""
        socks = [hostile.connect(peer.port) for _ in range(20)]
        for sock in socks:
            sock.sendall(b"\x01\x00\x00")
        ok, seconds = _storescu_seconds(peer, files)
        results = [_closed_within(sock, 15) for sock in socks]
        for sock in socks:
            sock.close()
        return {
            "storescu_ok": ok,
            "storescu_s": seconds,
            "stalled_closed": all(r[0] for r in results),
            "stalled_max_close_s": max(r[1] for r in results),
        }

    return attack


def no_attack(files: list[Path]) -> Attack:
    def attack(peer: Peer) -> dict[str, Any]:
        """The same real sender with nothing else going on: the reference time."""
        ok, seconds = _storescu_seconds(peer, files)
        return {"storescu_ok": ok, "storescu_s": seconds}

    return attack


def idle_connections(files: list[Path]) -> Attack:
    def attack(peer: Peer) -> dict[str, Any]:
        """300 idle TCP connections held open; then a real sender."""
        socks = [hostile.connect(peer.port) for _ in range(300)]
        ok, seconds = _storescu_seconds(peer, files)
        for sock in socks:
            sock.close()
        return {"storescu_ok": ok, "storescu_s": seconds}

    return attack


def _rss_sampler(peer: Peer, samples: list[int], stop: threading.Event) -> threading.Thread:
    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                samples.append(peer.status_kib("VmRSS"))
            stop.wait(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return thread


def idle_500_with_churn(files: list[Path], seconds: float = 30.0) -> Attack:
    def attack(peer: Peer) -> dict[str, Any]:
        """500 idle TCP connections plus two threads opening associations and dropping them
        at once (RST) for ``seconds``; a real storescu sends the study every 5 s meanwhile.
        The idle sockets must all be closed by the listener's timers, memory stay flat."""
        samples: list[int] = []
        stop = threading.Event()
        sampler = _rss_sampler(peer, samples, stop)
        idle = [hostile.connect(peer.port) for _ in range(500)]
        opened = time.monotonic()
        counts: dict[str, int] = {"accepted": 0, "rejected": 0, "other": 0, "failed": 0}
        churners = [
            threading.Thread(target=churn_associations, args=(peer.port, stop, counts), daemon=True)
            for _ in range(2)
        ]
        for thread in churners:
            thread.start()
        closed_after: list[float | None] = [None] * len(idle)
        sends: list[tuple[bool, float]] = []
        rss_at_send: list[float] = []
        while time.monotonic() - opened < seconds:
            stop.wait(5)
            for index, sock in enumerate(idle):
                if closed_after[index] is None and hostile.read_until_closed(sock, 0.001)[1]:
                    closed_after[index] = round(time.monotonic() - opened, 1)
            sends.append(_storescu_seconds(peer, files))
            rss_at_send.append(round(peer.status_kib("VmRSS") / 1024, 1))
        stop.set()
        for thread in churners:
            thread.join(10)
        for index, sock in enumerate(idle):
            if closed_after[index] is None and hostile.read_until_closed(sock, 10)[1]:
                closed_after[index] = round(time.monotonic() - opened, 1)
            sock.close()
        sampler.join(5)
        rss_mib = [round(kib / 1024, 1) for kib in samples]
        return {
            "seconds": seconds,
            "study_slices": len(files),
            "storescu_ok": all(ok for ok, _ in sends),
            "storescu_s": [s for _, s in sends],
            "churn_associations": counts,
            "churn_per_s": round(sum(counts.values()) / seconds, 1),
            "idle_closed": sum(c is not None for c in closed_after),
            "idle_last_closed_by_s": max((c for c in closed_after if c is not None), default=None),
            "rss_mib_at_each_send": rss_at_send,
            "rss_mib_min_max_end": [min(rss_mib), max(rss_mib), rss_mib[-1]] if rss_mib else None,
        }

    return attack


def association_limit(peer: Peer) -> dict[str, Any]:
    """Every association slot held by idle associations: the next caller gets a proper
    A-ASSOCIATE-RJ at once (not a hang), and a slot freed is a slot reused."""
    held = []
    for _ in range(16):
        conn = RawAssociation(peer.port, timeout=5)
        assert conn.associate() == 2, "the listener refused before its limit"
        held.append(conn)
    started = time.monotonic()
    extra = RawAssociation(peer.port, timeout=10)
    extra.sock.sendall(associate_rq())
    answer = extra.read_pdu(10)
    answered_s = round(time.monotonic() - started, 3)
    extra.close()
    rejected = answer is not None and answer[0] == 0x03
    reason = list(answer[1][1:4]) if rejected and answer is not None else None
    held.pop().close()
    time.sleep(0.5)
    again = RawAssociation(peer.port, timeout=5)
    reused = again.associate() == 2
    again.close()
    for conn in held:
        conn.close()
    return {
        "held": 16,
        "next_rejected": rejected,
        "reject_result_source_reason": reason,
        "answered_s": answered_s,
        "slot_reused_after_release": reused,
    }


def garbage(peer: Peer) -> dict[str, Any]:
    """1 MiB of 0xFF on a fresh connection."""
    sock = hostile.connect(peer.port)

    def push() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(b"\xff" * MiB)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    closed, seconds, answer = _closed_within(sock, 10)
    pusher.join(5)
    sock.close()
    time.sleep(0.2)
    log_lines = peer.log_path.read_text(errors="replace").count("unknown PDU type")
    return {"closed": closed, "close_s": seconds, "bytes_back": len(answer), "log_lines": log_lines}


def _fragments(command: bool) -> Attack:
    def attack(peer: Peer) -> dict[str, Any]:
        """1.5 GiB of command fragments (never last) or data fragments without a command."""
        with hostile.associated(peer.port) as assoc:
            raw = hostile.raw_socket(assoc)
            context_id = assoc.accepted_contexts[0].context_id or 1
            pdu = hostile.pdata(context_id, 0x01 if command else 0x00, b"\0" * 16000)
            sent = 0
            try:
                while sent < 1536 * MiB:
                    raw.sendall(pdu)
                    sent += len(pdu)
            except OSError:
                pass
            return {"sent_mib": round(sent / MiB, 2), "aborted": hostile.wait_aborted(assoc, 10)}

    return attack


def endless_store(peer: Peer) -> dict[str, Any]:
    """One C-STORE whose data set never ends (512 MiB sent; the bound here is 64 MiB)."""
    with hostile.associated(peer.port) as assoc:
        raw = hostile.raw_socket(assoc)
        context_id = assoc.accepted_contexts[0].context_id or 1
        command = hostile.store_command(b"1.2.840.10008.5.1.4.1.1.2", b"1.2.3.4.5.6")
        raw.sendall(hostile.pdata(context_id, 0x03, command))
        chunk = hostile.pdata(context_id, 0x00, b"\0" * 131000)
        for _ in range(512 * MiB // 131000):
            raw.sendall(chunk)
        raw.sendall(hostile.pdata(context_id, 0x02, b"\0" * 2))
        status = hostile.response_status(assoc, timeout=30)
    spool = Path(peer.store_dir)
    leftovers = sum(p.stat().st_size for p in spool.rglob("*") if p.is_file())
    return {"status": f"0x{status:04X}" if status is not None else None, "spool_bytes": leftovers}


def answers(files: list[Path], count: int) -> Attack:
    def attack(peer: Peer) -> dict[str, Any]:
        """``count`` one-instance associations (DCMTK storescu), answers counted."""
        ok = sum(_storescu_seconds(peer, files[:1])[0] for _ in range(count))
        return {"associations": count, "answered": ok}

    return attack


def _run(name: str, attack: Attack, work: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    peer = start_triage(work / name, fsync=False, extra_env=extra_env)
    try:
        time.sleep(0.5)
        idle_kib = peer.status_kib("VmRSS")
        outcome = attack(peer)
        time.sleep(0.5)
        outcome["peak_growth_mib"] = round((peer.status_kib("VmHWM") - idle_kib) / 1024, 1)
        outcome["alive"] = peer.alive()
    finally:
        peer.stop()
    print(f"{name:28s} {json.dumps(outcome)}", flush=True)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=400, help="one-instance associations")
    parser.add_argument("--only", default="", help="comma list of attacks to run (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        work = Path(tmp)
        study = write_phantom_study(work / "study", slices=3, size=64, seed=5)
        files = list(study.files)
        flood_study = list(write_phantom_study(work / "flood", slices=40, size=256, seed=6).files)
        env = {"TRIAGE_MAX_INSTANCE_BYTES": str(64 * MiB)}
        attacks: dict[str, Attack] = {
            "no_attack": no_attack(files),
            "declared_association_pdu": declared_association_pdu,
            "declared_pdata_4gib": declared_pdata,
            "stalled_20": stalled_connections(files),
            "idle_300": idle_connections(files),
            "garbage_1mib": garbage,
            "command_fragments": _fragments(True),
            "data_without_command": _fragments(False),
            "endless_store": endless_store,
            "answers": answers(files, args.answers),
            "no_attack_40_slices": no_attack(flood_study),
            "idle_500_with_churn": idle_500_with_churn(flood_study),
            "association_limit": association_limit,
        }
        chosen = [name for name in args.only.split(",") if name] or list(attacks)
        unknown = set(chosen) - set(attacks)
        if unknown:
            parser.error(f"unknown attacks: {sorted(unknown)}")
        results = {name: _run(name, attacks[name], work, env) for name in chosen}
    out = REPO_ROOT / "bench" / "results" / f"hostile-{date.today():%Y%m%d}.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    print(f"results: {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
