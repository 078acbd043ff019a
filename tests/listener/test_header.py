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
