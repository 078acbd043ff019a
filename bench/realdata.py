"""Real-data check: every file under a data folder sent with DCMTK ``storescu`` to ``triage listen``.

Run ``python -m bench.realdata ../shared/data`` (or ``make realdata``). Files are read where
they lie, never copied. Series folders (the GE head series, each Philips series) go over one
association each; every other file over its own, proposing the file's own transfer syntax
so compressed files arrive compressed. After each send the listener must still answer
C-ECHO. For each file the table says whether storescu sent it, the status it got, whether
it was stored (database row and file) or quarantined, the recorded transfer syntax, and why.

Stages are separate functions (discover, send, inspect, report) so later stages (inference)
can be added after ``inspect``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.dicom_peers import Peer, echo, send, start_triage

SERIES_FOLDERS = (
    "headct-ge-human-tilt",
    "headct-philips-phantom-study/S1000",
    "headct-philips-phantom-study/S2010",
    "headct-philips-phantom-study/S4010",
)
_SKIP_NAMES = {"PROVENANCE.md", "SHA256SUMS", "labels.csv"}
# storescu option that proposes a file's own (compressed or non-default) transfer syntax
_PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


@dataclass
class FileInfo:
    """What the file itself says (read here with pydicom, tolerantly)."""

    path: Path
    sop_instance_uid: str | None = None
    transfer_syntax: str | None = None
    readable: bool = False


@dataclass
class SendUnit:
    """Files sent over one association."""

    name: str
    files: list[FileInfo]
    options: list[str] = field(default_factory=list)


@dataclass
class Row:
    """One line of the report."""

    file: str
    sent: bool
    status: str
    stored: bool
    quarantined: bool
    transfer_syntax: str | None
    expected_syntax: str | None
    reason: str
    listener_alive: bool


# -- stage 1: discover -------------------------------------------------------------------
def read_info(path: Path) -> FileInfo:
    from pydicom import dcmread

    info = FileInfo(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(path, stop_before_pixels=True, force=True)
            info.sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "") or None
            meta = getattr(ds, "file_meta", None)
            syntax = meta.get("TransferSyntaxUID") if meta is not None else None
            info.transfer_syntax = str(syntax) if syntax else None
            info.readable = True
        except Exception:
            info.sop_instance_uid = _dcmdump_uid(path)  # DCMTK may read what pydicom cannot
    return info


def _dcmdump_uid(path: Path) -> str | None:
    done = subprocess.run(
        ["dcmdump", "-q", "+P", "0008,0018", str(path)], capture_output=True, text=True
    )
    match = re.search(r"\[([0-9.]+)\]", done.stdout)
    return match.group(1) if match else None


def plan_rounds(units: Sequence[SendUnit]) -> list[list[SendUnit]]:
    """Split units so no SOP Instance UID is sent twice to one listener.

    Several test files are one instance in different encodings (same UID); sent to one
    listener, the later ones are correctly ignored as re-sends, which would hide whether
    their own encoding is received and recorded right. Each round gets a fresh listener.
    """
    rounds: list[tuple[set[str], list[SendUnit]]] = []
    for unit in units:
        uids = {f.sop_instance_uid for f in unit.files if f.sop_instance_uid}
        for used, members in rounds:
            if not uids & used:
                used.update(uids)
                members.append(unit)
                break
        else:
            rounds.append((set(uids), [unit]))
    return [members for _, members in rounds]


def discover(root: Path) -> list[SendUnit]:
    """Send units: one per series folder, one per other file; PROVENANCE/checksums skipped."""
    units: list[SendUnit] = []
    series_dirs = {root / s for s in SERIES_FOLDERS}
    for folder in sorted(series_dirs):
        if folder.is_dir():
            files = [
                read_info(p)
                for p in sorted(folder.iterdir())
                if p.is_file() and p.name not in _SKIP_NAMES
            ]
            units.append(SendUnit(str(folder.relative_to(root)), files))
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name in _SKIP_NAMES or path.suffix == ".md":
            continue
        if any(folder in path.parents for folder in series_dirs):
            continue
        info = read_info(path)
        option = _PROPOSE.get(info.transfer_syntax or "")
        units.append(SendUnit(str(path.relative_to(root)), [info], [option] if option else []))
    return units


# -- stage 2: send -----------------------------------------------------------------------
@dataclass
class SendOutcome:
    unit: SendUnit
    returncode: int
    output: str
    alive: bool
    new_quarantine: list[dict[str, object]]
    new_rows: dict[str, tuple[str, str]]  # sop uid -> (transfer syntax, file) recorded by it


def _quarantine_reasons(folder: Path, seen: set[str]) -> list[dict[str, object]]:
    found = []
    for meta in sorted(folder.glob("*.json")):
        if meta.name not in seen:
            seen.add(meta.name)
            found.append(json.loads(meta.read_text()))
    return found


def _new_rows(var_dir: Path, after_id: int) -> tuple[int, dict[str, tuple[str, str]]]:
    with sqlite3.connect(var_dir / "triage.sqlite") as db:
        rows = db.execute(
            "SELECT id, sop_instance_uid, transfer_syntax_uid, file_path FROM instances "
            "WHERE id > ? ORDER BY id",
            (after_id,),
        ).fetchall()
    last = rows[-1][0] if rows else after_id
    return last, {uid: (syntax, path) for _, uid, syntax, path in rows}


def send_all(
    peer: Peer, units: Sequence[SendUnit], quarantine: Path, var_dir: Path
) -> list[SendOutcome]:
    """Send each unit, then check the listener answers C-ECHO and note what it recorded."""
    seen: set[str] = set()
    outcomes = []
    last_id = 0
    for unit in units:
        result = send(
            peer.port,
            [f.path for f in unit.files],
            aet=peer.aet,
            options=["-v", *unit.options],
            timeout=120,
        )
        alive = peer.alive() and echo(peer.port, aet=peer.aet)
        last_id, new_rows = _new_rows(var_dir, last_id)
        quarantined = _quarantine_reasons(quarantine, seen)
        outcomes.append(
            SendOutcome(unit, result.returncode, result.output, alive, quarantined, new_rows)
        )
        if not peer.alive():
            break
    return outcomes


# -- stage 3: inspect --------------------------------------------------------------------
_RESPONSE = re.compile(r"Received Store Response \(([^)]*)\)")
_SENDING = re.compile(r"Sending file: (.*)")


def _statuses(output: str) -> dict[str, str]:
    """storescu -v output: file -> response status text (or the error that stopped it)."""
    statuses: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        if m := _SENDING.search(line):
            current = m.group(1).strip()
            statuses[current] = "not sent"
        elif (m := _RESPONSE.search(line)) and current:
            statuses[current] = m.group(1)
        elif current and line.startswith("E: ") and statuses.get(current) == "not sent":
            statuses[current] = "not sent: " + line[3:].strip()
    return statuses


def inspect(outcomes: Sequence[SendOutcome]) -> list[Row]:
    """One row per file from what storescu said, what was recorded and what was quarantined."""
    rows = []
    recorded_before: set[str] = set()
    for outcome in outcomes:
        statuses = _statuses(outcome.output)
        reasons = [str(q.get("reason", "")) for q in outcome.new_quarantine]
        for info in outcome.unit.files:
            status = statuses.get(str(info.path))
            if status is None:
                err = [ln[3:] for ln in outcome.output.splitlines() if ln.startswith("E: ")]
                status = "not sent: " + (err[-1] if err else "storescu did not send it")
            sent = not status.startswith("not sent")
            uid = info.sop_instance_uid or ""
            row = outcome.new_rows.get(uid)
            stored = bool(row) and Path(row[1]).is_file()
            quarantined = sent and not stored and bool(reasons)
            reason = ""
            if sent and not stored and uid in recorded_before:
                reason = "re-send of an instance already stored (same SOP Instance UID): ignored"
            elif quarantined:
                reason = reasons[0] if len(outcome.unit.files) == 1 else "; ".join(set(reasons))
            elif not sent:
                reason = status.removeprefix("not sent: ")
            rows.append(
                Row(
                    file=str(info.path),
                    sent=sent,
                    status=status if sent else "-",
                    stored=stored,
                    quarantined=quarantined,
                    transfer_syntax=row[0] if row else None,
                    expected_syntax=info.transfer_syntax,
                    reason=reason[:160],
                    listener_alive=outcome.alive,
                )
            )
        recorded_before.update(outcome.new_rows)
    return rows


def problems(rows: Sequence[Row]) -> list[str]:
    """Things the listener handled badly: a success without a stored file, a wrong syntax,
    a stored file with a failure status, or a dead listener."""
    found = []
    for r in rows:
        if not r.listener_alive:
            found.append(f"{r.file}: listener did not answer C-ECHO afterwards")
        if r.sent and r.status == "Success" and not r.stored and "re-send" not in r.reason:
            found.append(f"{r.file}: success answered but nothing stored")
        if r.stored and r.status != "Success":
            found.append(f"{r.file}: stored but answered {r.status}")
        if r.stored and r.expected_syntax and r.transfer_syntax != r.expected_syntax:
            found.append(f"{r.file}: recorded {r.transfer_syntax}, file is {r.expected_syntax}")
    return found


# -- stage 4: report ---------------------------------------------------------------------
def report(rows: Sequence[Row], root: Path) -> None:
    print(
        f"{'file':<72} {'sent':<4} {'status':<26} {'stored':<6} {'quar':<4} {'syntax':<24} reason"
    )
    for r in rows:
        name = str(Path(r.file).relative_to(root)) if Path(r.file).is_relative_to(root) else r.file
        print(
            f"{name[-72:]:<72} {'yes' if r.sent else 'no':<4} {r.status[:26]:<26} "
            f"{'yes' if r.stored else 'no':<6} {'yes' if r.quarantined else 'no':<4} "
            f"{(r.transfer_syntax or '-')[:24]:<24} {r.reason}"
        )
    sent = sum(r.sent for r in rows)
    print(
        f"\n{len(rows)} files: {sent} sent, {sum(r.stored for r in rows)} stored, "
        f"{sum(r.quarantined for r in rows)} quarantined, {len(rows) - sent} refused by storescu"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--fsync", action="store_true", help="TRIAGE_SPOOL_FSYNC=true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    units = discover(root)
    rows: list[Row] = []
    exit_codes = []
    log_tails = []
    for members in plan_rounds(units):
        work = Path(tempfile.mkdtemp(prefix="pacs-triage-realdata-"))
        peer = start_triage(work, fsync=args.fsync)
        try:
            outcomes = send_all(peer, members, work / "quarantine", work / "var")
            rows += inspect(outcomes)
        finally:
            exit_codes.append(peer.stop())
            log_tails.append(peer.log_path.read_text(errors="replace")[-3000:])
            shutil.rmtree(work, ignore_errors=True)
    order = {str(f.path): i for i, u in enumerate(units) for f in u.files}
    rows.sort(key=lambda r: order.get(r.file, 0))
    report(rows, root)
    issues = problems(rows)
    print(
        "\nproblems:"
        if issues
        else "\nno problems: every stored file answered Success "
        "with its own transfer syntax, and the listener answered C-ECHO after every send"
    )
    for issue in issues:
        print(f"  {issue}")
    for code, tail in zip(exit_codes, log_tails, strict=True):
        if code not in (0, -15):
            issues.append(f"listener exited with {code}")
            print(f"listener exit code {code}; log tail:\n{tail}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
