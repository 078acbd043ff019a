"""The spool keeps whole files under validated UIDs only; the quarantine keeps bytes and a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from listener.spool import Quarantine, Spool, SpoolFullError
from triage.uids import InvalidUIDError

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


@pytest.mark.parametrize("fsync", [True, False])
def test_written_instance_lies_at_study_series_sop_path(tmp_path: Path, fsync: bool) -> None:
    spool = Spool(tmp_path / "spool", fsync=fsync)

    spooled = spool.write(STUDY, SERIES, SOP, b"DICM-bytes")

    assert spooled.path == (tmp_path / "spool" / STUDY / SERIES / f"{SOP}.dcm").resolve()
    assert spooled.path.read_bytes() == b"DICM-bytes"
    assert spooled.size == 10
    assert [p.name for p in (tmp_path / "spool").rglob("*") if p.is_file()] == [f"{SOP}.dcm"]


def test_rewrite_replaces_the_file_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.write(STUDY, SERIES, SOP, b"first version, longer")
    spooled = spool.write(STUDY, SERIES, SOP, memoryview(b"second"))
    assert spooled.path.read_bytes() == b"second"
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1


@pytest.mark.parametrize(
    ("study", "series", "sop"),
    [
        ("..", SERIES, SOP),
        (STUDY, "../..", SOP),
        (STUDY, SERIES, "../../etc/passwd"),
        (STUDY, SERIES, "1.2.3/../../x"),
        ("/etc", SERIES, SOP),
    ],
)
def test_path_traversal_uids_are_refused_and_nothing_is_written(
    tmp_path: Path, study: str, series: str, sop: str
) -> None:
    spool = Spool(tmp_path / "a" / "b" / "spool")
    with pytest.raises(InvalidUIDError):
        spool.write(study, series, sop, b"x")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_full_file_system_raises_spool_full_and_leaves_no_partial_file(
    small_filesystem: Path,
) -> None:
    spool = Spool(small_filesystem / "spool")
    spool.write(STUDY, SERIES, "1.1", b"\x01" * 1_500_000)

    with pytest.raises(SpoolFullError) as raised:
        spool.write(STUDY, SERIES, "1.2", b"\x02" * 1_500_000)

    assert isinstance(raised.value, OSError)
    files = sorted(p.name for p in small_filesystem.rglob("*") if p.is_file())
    assert files == ["1.1.dcm"], "the temporary file of the failed write is removed"


def test_quarantine_keeps_bytes_and_reason_under_a_generated_name(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "quarantine")

    kept = quarantine.keep(b"bad bytes", "SOPInstanceUID is not a valid DICOM UID", {"x": 1})

    assert kept.parent == (tmp_path / "quarantine").resolve()
    assert kept.read_bytes() == b"bad bytes"
    why = json.loads(kept.with_suffix(".json").read_text())
    assert why["reason"] == "SOPInstanceUID is not a valid DICOM UID"
    assert why["x"] == 1
    assert "at" in why
    second = quarantine.keep(b"", "empty", {})
    assert second != kept and second.read_bytes() == b""


def test_parts_are_written_in_order_as_one_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=False)
    spooled = spool.write(STUDY, SERIES, SOP, [b"pre", memoryview(b"amble-"), b"dataset"])
    assert spooled.path.read_bytes() == b"preamble-dataset"
    assert spooled.size == len(b"preamble-dataset")
