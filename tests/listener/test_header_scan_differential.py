"""Referee for the fast header scanner: it must agree with pydicom or decline, on every file.

:func:`listener.fastpath.scan_header` reads the grouping tags straight from the received
bytes; :func:`listener.header.parse_header` reads them with pydicom. The listener trusts
the scanner's answer without asking pydicom, so on each data set below, cut or whole,
one of these must hold:

- the scanner declines (``None``): pydicom decides, whatever it says;
- both answer, with equal :class:`~listener.header.InstanceHeader` values;
- both refuse with :class:`~listener.header.MalformedDatasetError`.

The corpus is every file the tests can reach: ``tests/data``, pydicom's test files and
pydicom-data's (both through ``pydicom.data.get_testdata_files``), and CT and MR files
re-encoded by DCMTK (and pydicom's openjpeg plugin for JPEG 2000, which DCMTK 3.6.7
cannot write) to the transfer syntaxes the listener accepts. Each data set is given to
both as the SCP receives it: without its file meta, in its transfer syntax, whole and cut
at several points, with the scanner seeing the first :data:`HEAD_BYTES` (as the SCP
keeps) and, to exercise a header that runs past what it sees, only the first 256.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from listener.fastpath import HEAD_BYTES, file_preamble, scan_header
from listener.header import InstanceHeader, MalformedDatasetError, parse_header

DATA = Path(__file__).resolve().parent.parent / "data"
HEAD_SIZES = (HEAD_BYTES, 256)
TAIL_BYTES = 64  # what listener.handlers keeps of a data set's end
_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # little, big endian


@dataclass(frozen=True)
class Received:
    """A data set as a C-STORE carries it: its bytes, transfer syntax and request UIDs."""

    syntax: str
    data: bytes
    sop_class_uid: str = "1.2.3"
    sop_instance_uid: str = "1.2.3.4"


def _meta_text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\x00 ")


def received_from_file(raw: bytes) -> Received | None:
    """The data set of a Part 10 file with its file meta stripped (None if it has none).

    The meta group is walked by hand (always Explicit VR Little Endian, PS3.10 7.1) rather
    than trusted to its group length, which some test files get wrong on purpose.
    """
    if raw[128:132] != b"DICM":
        return None
    pos = 132
    meta: dict[int, bytes] = {}
    while pos + 8 <= len(raw):
        group, element, vr = struct.unpack_from("<HH2s", raw, pos)
        if group != 0x0002:
            break
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UN", b"UT"):
            (length,) = struct.unpack_from("<L", raw, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", raw, pos + 6)
            start = pos + 8
        meta[element] = raw[start : start + length]
        pos = start + length
    if 0x0010 not in meta:
        return None
    return Received(
        syntax=_meta_text(meta[0x0010]),
        data=raw[pos:],
        sop_class_uid=_meta_text(meta.get(0x0002, b"")) or "1.2.3",
        sop_instance_uid=_meta_text(meta.get(0x0003, b"")) or "1.2.3.4",
    )


def received_without_meta(path: Path) -> Received:
    """A bare data set (no preamble, no meta), in the encoding pydicom detects."""
    ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    implicit, little = ds.original_encoding
    if implicit:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    return Received(syntax=str(syntax), data=path.read_bytes())


def cut_points(data: bytes) -> list[int]:
    """Where a transfer might stop: in the header, around Pixel Data, near the end."""
    size = len(data)
    points = {0, 8, 64, 300, 1024, size // 2, size - 20, size - 1}
    for tag in _PIXEL_DATA_TAGS:
        at = data.rfind(tag)
        if at >= 0:
            points.update({at, at + 4, at + 10, at + 13})
    return sorted(p for p in points if 0 <= p < size)


def _pydicom_verdict(received: Received, data: bytes) -> InstanceHeader | MalformedDatasetError:
    preamble = file_preamble(
        received.sop_class_uid, received.sop_instance_uid, received.syntax, "REFEREE"
    )
    try:
        return parse_header(preamble + data)
    except MalformedDatasetError as exc:
        return exc


def judge(received: Received, data: bytes) -> list[str]:
    """Referee one data set with each head size: 'answered', 'declined' or 'refused' each.

    Fails the test where the scanner answers or refuses and pydicom does otherwise.
    """
    expected = _pydicom_verdict(received, data)
    verdicts = []
    for head_size in HEAD_SIZES:
        scanned: InstanceHeader | MalformedDatasetError | None
        try:
            scanned = scan_header(data[:head_size], len(data), data[-TAIL_BYTES:], received.syntax)
        except MalformedDatasetError as exc:
            scanned = exc
        if scanned is None:
            verdicts.append("declined")
        elif isinstance(scanned, MalformedDatasetError):
            assert isinstance(expected, MalformedDatasetError), (
                f"scanner refused ({scanned}) what pydicom reads: {expected}"
            )
            verdicts.append("refused")
        else:
            assert not isinstance(expected, MalformedDatasetError), (
                f"scanner read {scanned} where pydicom refuses: {expected}"
            )
            assert scanned == expected, f"{len(data)} bytes, scanner saw {head_size}"
            verdicts.append("answered")
    return verdicts


def referee(received: Received) -> Counter[str]:
    """Judge the whole data set and each cut of it; count the verdicts."""
    verdicts: Counter[str] = Counter()
    for cut in [len(received.data), *cut_points(received.data)]:
        kind = "whole" if cut == len(received.data) else "cut"
        for verdict in judge(received, received.data[:cut]):
            verdicts[f"{kind} {verdict}"] += 1
    return verdicts


# -- the corpus --------------------------------------------------------------------------
def _testdata_files() -> list[Path]:
    return sorted({Path(f) for f in get_testdata_files() if Path(f).is_file()})


def _corpus_id(path: Path) -> str:
    if path.is_relative_to(DATA):
        return f"tests/{path.name}"
    parts = path.parts
    anchor = max(i for i, part in enumerate(parts) if part in ("test_files", "data"))
    source = "pydicom-data" if "data_store" in parts else "pydicom"
    return f"{source}/{'/'.join(parts[anchor + 1 :])}"


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as file:
        head = file.read(132)
    return head[128:132] == b"DICM" or path.suffix == ".dcm"


CORPUS = [
    pytest.param(path, id=_corpus_id(path))
    for path in [*sorted(DATA.glob("*.dcm")), *_testdata_files()]
    if _is_dicom(path)
]


def received_from(path: Path) -> Received:
    raw = path.read_bytes()
    return received_from_file(raw) or received_without_meta(path)


@pytest.mark.parametrize("path", CORPUS)
def test_scanner_agrees_with_pydicom_or_declines(path: Path) -> None:
    referee(received_from(path))


# -- re-encodings to every transfer syntax the listener accepts ------------------------------
SOURCES = {
    "ct_head_16x16": DATA / "ct_head_16x16.dcm",
    "CT_small": Path(get_testdata_file("CT_small.dcm") or ""),
    "MR_small": Path(get_testdata_file("MR_small.dcm") or ""),
}
# JPEG-LS near-lossless is left out: dcmcjpls refuses signed pixels, as all three are
# (pydicom's JPEGLSNearLossless_*.dcm files in the corpus cover that syntax).
ENCODERS: dict[str, tuple[str, ...]] = {
    "implicit": ("dcmconv", "+ti"),
    "explicit": ("dcmconv", "+te"),
    "big-endian": ("dcmconv", "+tb"),
    "deflated": ("dcmconv", "+td"),
    "jpeg-baseline": ("dcmcjpeg", "+eb"),
    "jpeg-extended": ("dcmcjpeg", "+ee"),
    "jpeg-lossless": ("dcmcjpeg", "+el"),
    "jpeg-lossless-sv1": ("dcmcjpeg", "+e1"),
    "jpeg-ls-lossless": ("dcmcjpls", "+el"),
    "rle": ("dcmcrle",),
    "jpeg-2000-lossless": ("pydicom", JPEG2000Lossless),
}
# The scanner reads the header of every encoding but big endian and deflated. It tells
# whole encapsulated Pixel Data only by the data set ending with its sequence delimiter,
# so it declines CT_small and MR_small once encapsulated: DCMTK puts Data Set Trailing
# Padding (FFFC,FFFC) after their Pixel Data. Where it must answer, it must answer a
# whole file at least once, or this referee would pass by never hearing from it.
NATIVE = {"implicit", "explicit"}
SCANNED = set(ENCODERS) - {"big-endian", "deflated"}


@pytest.mark.parametrize(
    ("source", "encoding"),
    [
        (source, encoding)
        for source in sorted(SOURCES)
        for encoding in sorted(ENCODERS)
        # openjpeg refuses a 16x16 image (fewer pixels than its resolution levels need)
        if (source, encoding) != ("ct_head_16x16", "jpeg-2000-lossless")
    ],
)
def test_scanner_agrees_with_pydicom_on_every_accepted_encoding(
    source: str, encoding: str, tmp_path: Path, reencode: Callable[..., bytes]
) -> None:
    raw = reencode(SOURCES[source], ENCODERS[encoding], tmp_path / "encoded.dcm")
    received = received_from_file(raw)
    assert received is not None

    verdicts = referee(received)

    if encoding in NATIVE or (encoding in SCANNED and source == "ct_head_16x16"):
        assert verdicts["whole answered"] >= 1, verdicts


def test_overlay_holding_pixel_data_tag_bytes_is_not_taken_for_pixel_data() -> None:
    """Regression: cut just before its Pixel Data, examples_overlay.dcm still holds the
    tag's bytes in its Overlay Data. pydicom's path used to take them for Pixel Data
    (a substring search); both readers now say there is none, and agree."""
    received = received_from(Path(get_testdata_file("examples_overlay.dcm") or ""))
    cut = received.data[: received.data.rfind(_PIXEL_DATA_TAGS[0])]
    assert _PIXEL_DATA_TAGS[0] in cut

    scanned = scan_header(cut, len(cut), cut[-TAIL_BYTES:], received.syntax)
    assert scanned is not None and scanned.has_pixel_data is False
    verdict = _pydicom_verdict(received, cut)
    assert isinstance(verdict, InstanceHeader) and verdict.has_pixel_data is False
