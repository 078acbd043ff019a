"""Reading the grouping tags of received bytes, and refusing bytes that cannot be filed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from listener.header import MalformedDatasetError, parse_header

DATA = Path(__file__).resolve().parent.parent / "data"
ROOT = "1.2.826.0.1.3680043.8.498.7771"


def test_grouping_and_geometry_tags_are_read() -> None:
    header = parse_header((DATA / "ct_head_16x16.dcm").read_bytes())

    assert header.study_uid == f"{ROOT}.1"
    assert header.series_uid == f"{ROOT}.2"
    assert header.sop_instance_uid == f"{ROOT}.3.1"
    assert header.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert (header.modality, header.body_part) == ("CT", "HEAD")
    assert header.instance_number == 1 and header.images_in_acquisition == 1
    assert header.image_position == (-125.0, -125.0, 10.0)
    assert header.position_along_normal == 10.0
    assert (header.rows, header.columns) == (16, 16)
    assert header.has_pixel_data is True


def test_image_without_pixel_data_is_told_apart() -> None:
    header = parse_header((DATA / "ct_without_pixel_data.dcm").read_bytes())
    assert header.has_pixel_data is False


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ct_uid_dotdot_slash.dcm", "SOPInstanceUID is not a valid DICOM UID"),
        ("ct_uid_with_slash.dcm", "SOPInstanceUID is not a valid DICOM UID"),
        ("ct_truncated_pixel_data.dcm", "Pixel Data is cut short"),
        ("ct_garbage_dataset.dcm", ""),
    ],
)
def test_unfileable_bytes_raise_malformed_with_reason(name: str, message: str) -> None:
    with pytest.raises(MalformedDatasetError, match=message):
        parse_header((DATA / name).read_bytes())


@pytest.mark.parametrize("cut", [0, 10, 131, 200, 700, 1000, 1300])
def test_bytes_cut_anywhere_are_never_taken_for_a_whole_image(cut: int) -> None:
    raw = (DATA / "ct_head_16x16.dcm").read_bytes()
    try:
        header = parse_header(raw[:cut])
    except MalformedDatasetError:
        return  # refused as cannot-understand
    assert header.has_pixel_data is False  # refused by the handler as an image without pixels


@pytest.mark.parametrize(
    "convert",
    [("dcmcjpls",), ("dcmcrle",), ("dcmconv", "+tb"), ("dcmconv", "+ti")],
    ids=["jpeg-ls", "rle", "big-endian", "implicit"],
)
def test_truncation_is_found_in_every_encoding(
    convert: tuple[str, ...], tmp_path: Path, dcmtk_run: Callable[..., Any]
) -> None:
    target = tmp_path / "converted.dcm"
    result = dcmtk_run(convert[0], *convert[1:], DATA / "ct_head_16x16.dcm", target)
    assert result.ok, result.output
    raw = target.read_bytes()

    assert parse_header(raw).sop_instance_uid == f"{ROOT}.3.1"
    with pytest.raises(MalformedDatasetError, match="cut short"):
        parse_header(raw[:-20])


def _with_frames(value: bytes) -> bytes:
    """ct_head_16x16 with a NumberOfFrames (0028,0008) IS element inserted in tag order."""
    from io import BytesIO

    import pydicom

    ds = pydicom.dcmread(DATA / "ct_head_16x16.dcm")
    ds.NumberOfFrames = "1"
    out = BytesIO()
    ds.save_as(out)
    raw = out.getvalue()
    element = b"\x28\x00\x08\x00IS\x02\x001 "
    assert raw.count(element) == 1
    return raw.replace(element, b"\x28\x00\x08\x00IS" + len(value).to_bytes(2, "little") + value)


def test_frame_count_that_is_not_a_number_is_refused() -> None:
    from listener.fastpath.header_scan import EXPLICIT_LE

    assert parse_header(_with_frames(b"1 ")).rows == 16
    raw = _with_frames(b"1A")
    with pytest.raises(MalformedDatasetError, match="NumberOfFrames"):
        parse_header(raw)
    from listener.fastpath.header_scan import scan_header

    assert raw[132:136] == b"\x02\x00\x00\x00"  # File Meta Information Group Length
    start = 144 + int.from_bytes(raw[140:144], "little")  # the data set after the meta
    assert scan_header(_with_frames(b"1 ")[start:], len(raw) - start, raw[-8:], EXPLICIT_LE)
    assert scan_header(raw[start:], len(raw) - start, raw[-8:], EXPLICIT_LE) is None


def test_native_pixel_data_of_undefined_length_is_refused() -> None:
    raw = (DATA / "ct_head_16x16.dcm").read_bytes()
    tag = b"\xe0\x7f\x10\x00OW\x00\x00"
    at = raw.index(tag) + len(tag)
    undefined = raw[:at] + b"\xff\xff\xff\xff" + raw[at + 4 :] + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    with pytest.raises(MalformedDatasetError, match="undefined length"):
        parse_header(undefined)
