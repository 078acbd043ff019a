"""Studies sent by a real DCMTK peer are stored whole and completed once per version.

The listener runs in-process with a recording dispatcher; each test runs on SQLite and on
PostgreSQL (``database_url`` is parametrized).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from db.vocabulary import AuditEventType
from training.phantom import PhantomStudy


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a DICOM file, without preamble and file meta information."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM", f"{path} is not a DICOM file"
    assert raw[132:136] == b"\x02\x00\x00\x00", "file meta must start with its group length"
    group_length = int.from_bytes(raw[140:144], "little")
    return raw[144 + group_length :]


def spooled_path(spool: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    return spool / study_uid / series_uid / f"{sop_uid}.dcm"


def test_whole_study_is_stored_and_completed_once_by_series_rule(
    head_ct: PhantomStudy,
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    dispatcher: Any,
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    settings = make_settings(
        database_url=database_url, stable_seconds=300, quiet_seconds=0.3, spool_fsync=True
    )
    service = run_listener(settings)

    started = time.monotonic()
    sent = storescu(service.port, head_ct.files, aet="CT_SCANNER")
    assert sent.ok, sent.output
    poll(lambda: dispatcher.versions(head_ct.study_uid), timeout=20, what="completion")
    elapsed = time.monotonic() - started

    assert elapsed < 30, "completion must come from the series rule, not the 300 s timer"
    assert dispatcher.versions(head_ct.study_uid) == [1]
    study = recorded.study(head_ct.study_uid)
    assert study.state.value == "queued"
    assert study.version == 1
    assert study.calling_aet == "CT_SCANNER"
    completed = recorded.events(AuditEventType.STUDY_COMPLETED, head_ct.study_uid)
    assert len(completed) == 1
    assert "series whole" in completed[0].detail["reason"]

    instances = recorded.instances(head_ct.study_uid)
    assert [i.instance_number for i in instances] == list(range(1, 41))
    spool = settings.spool.dir
    stored = sorted(p for p in spool.rglob("*") if p.is_file())
    assert len(stored) == 40
    for original in head_ct.files:
        sop_uid = pydicom.dcmread(original, stop_before_pixels=True).SOPInstanceUID
        target = spooled_path(spool, head_ct.study_uid, head_ct.series_uid, sop_uid)
        assert target.is_file(), f"{sop_uid} missing from the spool"
        assert dataset_bytes(target) == dataset_bytes(original)


def test_resent_instances_are_not_duplicated_nor_completed_again(
    head_ct: PhantomStudy,
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    dispatcher: Any,
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    settings = make_settings(database_url=database_url, stable_seconds=300, quiet_seconds=0.2)
    service = run_listener(settings)
    assert storescu(service.port, head_ct.files).ok
    poll(lambda: dispatcher.versions(head_ct.study_uid), what="first completion")

    again = storescu(service.port, head_ct.files)

    assert again.ok, again.output
    assert "Failed" not in again.output and "Warning" not in again.output
    time.sleep(0.5)  # several quiet periods and completion ticks: no second completion may fire
    assert dispatcher.versions(head_ct.study_uid) == [1]
    assert recorded.instance_count() == 40
    assert len([p for p in settings.spool.dir.rglob("*") if p.is_file()]) == 40
    assert recorded.study(head_ct.study_uid).version == 1


def test_new_series_after_completion_reopens_study_as_version_2(
    head_ct: PhantomStudy,
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    dispatcher: Any,
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    extra = phantoms(
        "head40-bone",
        slices=5,
        size=64,
        seed=1,
        study_uid=head_ct.study_uid,
        series_uid=generate_uid(entropy_srcs=["tests", "bone series"]),
        series_description="HEAD BONE",
    )
    settings = make_settings(database_url=database_url, stable_seconds=300, quiet_seconds=0.2)
    service = run_listener(settings)
    assert storescu(service.port, head_ct.files).ok
    poll(lambda: dispatcher.versions(head_ct.study_uid), what="version 1")

    assert storescu(service.port, extra.files).ok

    poll(lambda: len(dispatcher.versions(head_ct.study_uid)) == 2, what="version 2")
    assert dispatcher.versions(head_ct.study_uid) == [1, 2]
    # the assembler marks the study queued just after the dispatcher returns
    poll(lambda: recorded.state(head_ct.study_uid) == "queued", what="queued")
    study = recorded.study(head_ct.study_uid)
    assert study.version == 2
    assert len(recorded.instances(head_ct.study_uid)) == 45
    updated = recorded.events(AuditEventType.STUDY_UPDATED, head_ct.study_uid)
    assert [e.detail["version"] for e in updated] == [2]
    assert len(recorded.events(AuditEventType.STUDY_COMPLETED, head_ct.study_uid)) == 1


def test_study_with_missing_slices_completes_by_idle_timer(
    head_ct: PhantomStudy,
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    dispatcher: Any,
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    settings = make_settings(database_url=database_url, stable_seconds=1.0, quiet_seconds=0.1)
    service = run_listener(settings)
    partial = head_ct.files[0:10] + head_ct.files[19:30]  # instances 1..10 and 20..30

    assert storescu(service.port, partial).ok
    sent_at = time.monotonic()
    poll(lambda: dispatcher.versions(head_ct.study_uid), what="idle completion")

    assert time.monotonic() - sent_at >= 0.9, "a study with holes must wait for the idle timer"
    assert dispatcher.versions(head_ct.study_uid) == [1]
    completed = recorded.events(AuditEventType.STUDY_COMPLETED, head_ct.study_uid)
    assert len(completed) == 1
    assert "idle" in completed[0].detail["reason"]
    assert len(recorded.instances(head_ct.study_uid)) == 21


def test_series_without_announced_count_completes_when_contiguous_and_evenly_spaced(
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    dispatcher: Any,
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    study = phantoms("unannounced12", slices=12, size=64, seed=2, images_in_acquisition=False)
    settings = make_settings(database_url=database_url, stable_seconds=300, quiet_seconds=0.2)
    service = run_listener(settings)

    assert storescu(service.port, study.files).ok

    poll(lambda: dispatcher.versions(study.study_uid), what="geometry completion")
    completed = recorded.events(AuditEventType.STUDY_COMPLETED, study.study_uid)
    assert "series whole" in completed[0].detail["reason"]


def test_series_with_a_gap_and_no_announced_count_waits_for_idle_timer(
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    dispatcher: Any,
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    study = phantoms("unannounced12", slices=12, size=64, seed=2, images_in_acquisition=False)
    settings = make_settings(database_url=database_url, stable_seconds=1.0, quiet_seconds=0.1)
    service = run_listener(settings)

    assert storescu(service.port, study.files[:5] + study.files[6:]).ok  # slice 6 missing
    sent_at = time.monotonic()

    poll(lambda: dispatcher.versions(study.study_uid), what="idle completion")
    assert time.monotonic() - sent_at >= 0.9
    completed = recorded.events(AuditEventType.STUDY_COMPLETED, study.study_uid)
    assert "idle" in completed[0].detail["reason"]


@pytest.fixture(scope="session")
def chest_ct(phantoms: Callable[..., PhantomStudy], tmp_path_factory: Any) -> list[Path]:
    """A CT of the chest: body part CHEST, non-head study and series descriptions."""
    source = phantoms("chest-source", slices=6, size=64, seed=3, body_part="CHEST")
    folder = tmp_path_factory.mktemp("chest")
    files = []
    for path in source.files:
        ds = pydicom.dcmread(path)
        ds.StudyDescription = "CT THORAX WITH CONTRAST"
        ds.SeriesDescription = "THORAX 1.0 B30f"
        target = folder / path.name
        ds.save_as(target, enforce_file_format=True)
        files.append(target)
    return files


@pytest.mark.parametrize("kind", ["mr_head", "ct_chest"])
def test_non_head_ct_study_is_stored_and_ignored_with_reason(
    kind: str,
    chest_ct: list[Path],
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    dispatcher: Any,
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    if kind == "mr_head":
        files = phantoms("mr-head", slices=6, size=64, seed=4, modality="MR").files
    else:
        files = chest_ct
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    settings = make_settings(database_url=database_url, stable_seconds=300, quiet_seconds=0.2)
    service = run_listener(settings)

    assert storescu(service.port, files).ok

    poll(lambda: recorded.state(study_uid) == "ignored", what="ignored state")
    study = recorded.study(study_uid)
    assert "no series matches the routing rule" in study.state_reason
    assert len(recorded.instances(study_uid)) == 6
    ignored = recorded.events(AuditEventType.STUDY_IGNORED, study_uid)
    assert len(ignored) == 1 and ignored[0].detail["reason"] == study.state_reason
    time.sleep(0.3)  # a completion tick or two: the dispatcher must stay untouched
    assert dispatcher.calls == []


def test_eight_concurrent_senders_all_land_completely(
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    dispatcher: Any,
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    studies = [phantoms(f"small{i}", slices=12, size=128, seed=100 + i) for i in range(8)]
    settings = make_settings(database_url=database_url, stable_seconds=300, quiet_seconds=0.3)
    service = run_listener(settings)

    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(
            pool.map(
                lambda pair: storescu(service.port, pair[1].files, aet=f"MODALITY{pair[0]}"),
                enumerate(studies),
            )
        )

    assert all(run.ok for run in runs), [run.output for run in runs if not run.ok]
    poll(lambda: len(dispatcher.calls) == 8, timeout=30, what="8 completions")
    for index, study in enumerate(studies):
        assert dispatcher.versions(study.study_uid) == [1]
        assert len(recorded.instances(study.study_uid)) == 12
        assert recorded.study(study.study_uid).calling_aet == f"MODALITY{index}"
    assert recorded.instance_count() == 8 * 12
