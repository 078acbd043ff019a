"""Studies laid out as scanners send them, sent by DCMTK storescu into the real listener.

The idle timer stays at its default 60 s, so a study that completes within a few seconds
was completed by an early rule: the head series was whole and nothing else held it open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from db.vocabulary import AuditEventType
from training.phantom_layouts import LAYOUTS, Layout, write_layout

QUIET_SECONDS = 3.0  # the shipped default
WHOLE = [name for name in LAYOUTS if name != "missing_slice"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Layout]:
    root = tmp_path_factory.mktemp("layouts")
    return {name: write_layout(root / name, name) for name in LAYOUTS}


@dataclass
class Rig:
    """A listener starter and what the tests read back."""

    listen: Callable[[float, float], Any]
    recorded: Any
    poll: Callable[..., Any]
    dispatcher: Any


@pytest.fixture
def rig(
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    recorded: Any,
    poll: Callable[..., Any],
    dispatcher: Any,
    database_url: str,
) -> Rig:
    def listen(stable: float, quiet: float) -> Any:
        settings = make_settings(
            database_url=database_url, stable_seconds=stable, quiet_seconds=quiet
        )
        return run_listener(settings)

    return Rig(listen, recorded, poll, dispatcher)


@pytest.mark.parametrize("name", WHOLE)
def test_whole_layout_completes_in_seconds_by_geometry(
    name: str,
    layouts: dict[str, Layout],
    storescu: Callable[..., Any],
    rig: Rig,
) -> None:
    layout = layouts[name]
    service = rig.listen(60.0, QUIET_SECONDS)
    assert storescu(service.port, layout.files).ok
    sent = time.monotonic()

    rig.poll(lambda: rig.recorded.state(layout.study_uid) == "queued", timeout=15, what="queued")

    assert time.monotonic() - sent < QUIET_SECONDS + 2.0, "the idle timer completed it"
    (completed,) = rig.recorded.events(AuditEventType.STUDY_COMPLETED, layout.study_uid)
    assert completed.detail["basis"] == "geometry"
    assert len(rig.recorded.instances(layout.study_uid)) == len(layout.files), "all stored"
    assert rig.dispatcher.versions(layout.study_uid) == [1]


def test_series_missing_a_middle_slice_waits_for_the_idle_timer(
    layouts: dict[str, Layout],
    storescu: Callable[..., Any],
    rig: Rig,
) -> None:
    layout = layouts["missing_slice"]
    service = rig.listen(8.0, 0.5)
    assert storescu(service.port, layout.files).ok
    sent = time.monotonic()

    time.sleep(3.0)  # six times quiet_seconds
    assert rig.recorded.state(layout.study_uid) == "receiving"
    rig.poll(
        lambda: rig.recorded.state(layout.study_uid) == "queued", timeout=15, what="idle timer"
    )
    assert time.monotonic() - sent >= 7.5
    (completed,) = rig.recorded.events(AuditEventType.STUDY_COMPLETED, layout.study_uid)
    assert completed.detail["basis"] == "idle_timer"


def _send_with_pause(port: int, files: list[Path], pause: float) -> None:
    """One association: the first half, a pause, the rest (a scanner still reconstructing)."""
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    assert assoc.is_established
    try:
        half = len(files) // 2
        for index, path in enumerate(files):
            if index == half:
                time.sleep(pause)
            status = assoc.send_c_store(pydicom.dcmread(path))
            assert status.Status == 0x0000
    finally:
        assoc.release()


def test_series_paused_mid_way_does_not_complete_during_the_pause(
    layouts: dict[str, Layout],
    rig: Rig,
) -> None:
    layout = layouts["vertex_first"]
    service = rig.listen(60.0, 0.5)
    sender = threading.Thread(target=_send_with_pause, args=(service.port, layout.files, 5.0))
    sender.start()
    rig.poll(lambda: len(rig.recorded.instances(layout.study_uid)) == 10, what="the first half")

    time.sleep(4.0)  # the first half is contiguous and gap-free: only the open association
    assert rig.recorded.state(layout.study_uid) == "receiving"
    sender.join(timeout=30)

    rig.poll(lambda: rig.recorded.state(layout.study_uid) == "queued", timeout=5, what="queued")
    assert rig.dispatcher.versions(layout.study_uid) == [1]
    assert len(rig.recorded.instances(layout.study_uid)) == len(layout.files)
