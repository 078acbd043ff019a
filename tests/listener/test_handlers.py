"""What a sender is answered for each dataset, read from a real pynetdicom association.

Bad datasets (``tests/data``) get a named failure status, land in the quarantine with a
JSON reason, are audited, and never reach the spool or any path outside it; a good study
sent afterwards is still stored. A full spool (a real 2 MiB tmpfs) answers 0xA700 and
leaves nothing half-written recorded.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, MRImageStorage

from db.vocabulary import AuditEventType
from training.phantom import PhantomStudy

DATA = Path(__file__).resolve().parent.parent / "data"

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210


def dataset_part(raw: bytes) -> bytes:
    """A DICOM file's bytes after its preamble and file meta information."""
    return raw[144 + int.from_bytes(raw[140:144], "little") :]


@pytest.fixture
def send_raw(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[int]]:
    """``send_raw(port, files)`` sends each file's bytes as they are; returns the statuses.

    pynetdicom's chunked mode streams the file after its meta information without
    decoding it, so truncated and garbage datasets travel exactly as written.
    """
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)

    def send(port: int, files: list[Path], aet: str = "BADSCU") -> list[int]:
        ae = AE(ae_title=aet)
        for sop_class in (CTImageStorage, MRImageStorage):
            ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
        assert assoc.is_established
        try:
            statuses = []
            for path in files:
                answer = assoc.send_c_store(path)
                assert "Status" in answer, f"no C-STORE response for {path.name}"
                statuses.append(int(answer.Status))
            return statuses
        finally:
            assoc.release()

    return send


BAD_DATASETS = [
    pytest.param("ct_uid_dotdot_slash.dcm", CANNOT_UNDERSTAND, "SOPInstanceUID", id="uid-dotdot"),
    pytest.param("ct_uid_with_slash.dcm", CANNOT_UNDERSTAND, "SOPInstanceUID", id="uid-slash"),
    pytest.param("ct_truncated_pixel_data.dcm", CANNOT_UNDERSTAND, "cut short", id="truncated"),
    pytest.param("ct_garbage_dataset.dcm", CANNOT_UNDERSTAND, "", id="garbage"),
    pytest.param("ct_without_pixel_data.dcm", SOP_CLASS_MISMATCH, "Pixel Data", id="no-pixels"),
    pytest.param("ct_sop_class_mismatch.dcm", SOP_CLASS_MISMATCH, "SOP Class", id="class"),
    pytest.param("ct_sop_instance_mismatch.dcm", CANNOT_UNDERSTAND, "differs", id="instance"),
]


@pytest.mark.parametrize(("name", "status", "reason"), BAD_DATASETS)
def test_bad_dataset_is_refused_quarantined_and_next_study_is_stored(
    name: str,
    status: int,
    reason: str,
    tmp_path: Path,
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    send_raw: Callable[..., list[int]],
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    settings = make_settings(database_url=database_url)
    service = run_listener(settings)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    bad = DATA / name

    assert send_raw(service.port, [bad]) == [status]
    assert send_raw(service.port, [DATA / "ct_head_16x16.dcm"], aet="GOODSCU") == [SUCCESS]

    quarantined = sorted(settings.spool.quarantine_dir.glob("*.json"))
    assert len(quarantined) == 1
    why = json.loads(quarantined[0].read_text())
    assert reason in why["reason"]
    assert why["status"] == f"0x{status:04X}"
    assert why["calling_aet"] == "BADSCU"
    kept = quarantined[0].with_suffix(".dcm").read_bytes()
    assert dataset_part(kept) == dataset_part(bad.read_bytes()), "kept exactly as received"
    events = recorded.events(AuditEventType.INSTANCE_QUARANTINED)
    assert [e.detail["status"] for e in events] == [status]

    spooled = [p for p in settings.spool.dir.rglob("*") if p.is_file()]
    assert [p.name for p in spooled] == ["1.2.826.0.1.3680043.8.498.7771.3.1.dcm"]
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    outside = [
        p
        for p in written
        if not p.is_relative_to(settings.spool.dir)
        and not p.is_relative_to(settings.spool.quarantine_dir)
        and not p.name.startswith("triage.sqlite")
    ]
    assert outside == [], "nothing may be written outside the spool and quarantine"
    assert not any("passwd" in str(p) or p.name == "x.dcm" for p in written)
    assert recorded.instance_count() == 1
    good = recorded.instances("1.2.826.0.1.3680043.8.498.7771.1")
    assert [i.calling_aet for i in good] == ["GOODSCU"]


# -- disk full -----------------------------------------------------------------------------
def test_full_spool_answers_out_of_resources_and_records_nothing_half_written(
    small_filesystem: Path,
    head_ct: PhantomStudy,
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    send_raw: Callable[..., list[int]],
    recorded: Any,
) -> None:
    spool = small_filesystem / "spool"
    settings = make_settings(database_url=database_url, spool_dir=spool, spool_fsync=True)
    service = run_listener(settings)
    files = head_ct.files[:6]  # about 525 KB each: the fourth no longer fits in 2 MiB

    statuses = send_raw(service.port, files, aet="CT_ROOM_1")

    stored = statuses.count(SUCCESS)
    assert 1 <= stored < len(files)
    assert statuses == [SUCCESS] * stored + [OUT_OF_RESOURCES] * (len(files) - stored)
    instances = recorded.instances(head_ct.study_uid)
    assert len(instances) == stored
    on_disk = sorted(p for p in spool.rglob("*") if p.is_file())
    assert on_disk == sorted(Path(i.file_path) for i in instances), "no temp or partial files"
    for original, instance in zip(files, instances, strict=False):
        assert Path(instance.file_path).stat().st_size == instance.file_size
        kept = pydicom.dcmread(instance.file_path)
        assert np.array_equal(kept.pixel_array, pydicom.dcmread(original).pixel_array)


def test_study_refused_for_space_is_held_open_until_the_sender_resends(
    small_filesystem: Path,
    head_ct: PhantomStudy,
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    send_raw: Callable[..., list[int]],
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    """Finding 12: a spool full for longer than the idle timer completed a partial study."""
    spool = small_filesystem / "spool"
    settings = make_settings(
        database_url=database_url, spool_dir=spool, spool_fsync=True, stable_seconds=1.0
    )
    service = run_listener(settings)
    files = head_ct.files[:6]

    statuses = send_raw(service.port, files, aet="CT_ROOM_1")
    assert OUT_OF_RESOURCES in statuses and SUCCESS in statuses
    time.sleep(3.0)  # three idle timers: without the hold the partial study completes here
    assert recorded.state(head_ct.study_uid) == "receiving"
    assert recorded.events(AuditEventType.STUDY_HELD, head_ct.study_uid)

    remounted = subprocess.run(
        ["mount", "-o", "remount,size=16m", str(small_filesystem)], capture_output=True, text=True
    )
    assert remounted.returncode == 0, remounted.stderr
    assert send_raw(service.port, files, aet="CT_ROOM_1") == [SUCCESS] * len(files)
    poll(lambda: recorded.state(head_ct.study_uid) != "receiving", what="completion")
    assert len(recorded.instances(head_ct.study_uid)) == len(files)
    [completed] = recorded.events(AuditEventType.STUDY_COMPLETED, head_ct.study_uid)
    assert completed.detail["version"] == 1
