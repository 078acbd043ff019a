"""Refuse at receive what the worker could not read (issue #13, findings 9 and 10).

Each case sends exactly the bytes of one mutated 16x16 CT slice over a real association
(the raw peer of ``bench.hostile_peers``), and checks the answer is a failure status, the
bytes are quarantined with the reason, and nothing reaches the spool; the unmutated
slice, sent the same way, is stored.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

from bench import hostile_peers as peer

DATA = Path(__file__).resolve().parents[1] / "data"
SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC210
PIXEL_TAG = b"\xe0\x7f\x10\x00"


def _slice(implicit: bool = False) -> tuple[str, bytes]:
    ds = pydicom.dcmread(DATA / "ct_head_16x16.dcm")
    encoded = encode(ds, implicit, True)
    assert encoded is not None
    return str(ds.SOPInstanceUID), encoded


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(everything before Pixel Data, its 512-byte value) of the explicit-VR slice."""
    at = data.rindex(PIXEL_TAG + b"OW")
    return data[:at], data[at + 12 :]


def _pixel(vr: bytes, value: bytes) -> bytes:
    return PIXEL_TAG + vr + b"\x00\x00" + struct.pack("<L", len(value)) + value


def _mutant(name: str) -> bytes:
    _, data = _slice()
    before, pixels = _split(data)
    mutants = {
        "quarter-length": before + _pixel(b"OW", pixels[: len(pixels) // 4]),
        "zero-length": before + _pixel(b"OW", b""),
        "odd-length": before + _pixel(b"OB", pixels + b"\x00"),
        "vr-ut": before + _pixel(b"UT", pixels),
        "vr-un": before + _pixel(b"UN", pixels),
        "vr-of": before + _pixel(b"OF", pixels),
        "vr-sq": before + _pixel(b"SQ", pixels),
        "two-pixel-data": before + _pixel(b"OW", pixels) + _pixel(b"OW", pixels),
        "trailing-bytes": before + _pixel(b"OW", pixels) + b"\x01\x02\x03\x04garbage!",
    }
    return mutants[name]


@pytest.mark.parametrize(
    "mutant",
    [
        "quarter-length",
        "zero-length",
        "odd-length",
        "vr-ut",
        "vr-un",
        "vr-of",
        "vr-sq",
        "two-pixel-data",
        "trailing-bytes",
    ],
)
def test_pixel_data_that_does_not_match_its_header_is_refused_and_quarantined(
    make_settings: Callable[..., Any], run_listener: Callable[..., Any], mutant: str
) -> None:
    settings = make_settings()
    service = run_listener(settings)
    sop_uid, _ = _slice()
    with peer.associated(service.port) as assoc:
        status = peer.store_raw(assoc, sop_uid, _mutant(mutant))
    assert status == CANNOT_UNDERSTAND
    reasons = [json.loads(p.read_text()) for p in settings.spool.quarantine_dir.rglob("*.json")]
    assert len(reasons) == 1, reasons
    assert "Pixel Data" in json.dumps(reasons[0])
    assert not list(settings.spool.dir.rglob("*.dcm"))


def test_explicit_vr_data_set_on_an_implicit_vr_context_is_refused(
    make_settings: Callable[..., Any], run_listener: Callable[..., Any]
) -> None:
    settings = make_settings()
    service = run_listener(settings)
    sop_uid, explicit = _slice(implicit=False)
    with peer.associated(service.port, syntax=ImplicitVRLittleEndian) as assoc:
        status = peer.store_raw(assoc, sop_uid, explicit)
    assert status == CANNOT_UNDERSTAND
    reasons = [p.read_text() for p in settings.spool.quarantine_dir.rglob("*.json")]
    assert any("Explicit VR on an Implicit VR" in r for r in reasons), reasons


def test_implicit_vr_data_set_on_an_explicit_vr_context_is_refused(
    make_settings: Callable[..., Any], run_listener: Callable[..., Any]
) -> None:
    settings = make_settings()
    service = run_listener(settings)
    sop_uid, implicit = _slice(implicit=True)
    with peer.associated(service.port, syntax=ExplicitVRLittleEndian) as assoc:
        status = peer.store_raw(assoc, sop_uid, implicit)
    assert status == CANNOT_UNDERSTAND


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_the_unmutated_slice_sent_the_same_way_is_stored(
    make_settings: Callable[..., Any], run_listener: Callable[..., Any], implicit: bool
) -> None:
    settings = make_settings()
    service = run_listener(settings)
    sop_uid, data = _slice(implicit=implicit)
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    with peer.associated(service.port, syntax=syntax) as assoc:
        status = peer.store_raw(assoc, sop_uid, data)
    assert status == SUCCESS
    stored = list(settings.spool.dir.rglob("*.dcm"))
    assert len(stored) == 1
    assert pydicom.dcmread(stored[0]).pixel_array.shape == (16, 16)
