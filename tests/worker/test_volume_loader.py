"""The loader drops the slices it cannot decode, names them, and keeps every good one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate

from worker.volume_loader import StudyDataError, load_series, read_series

DATA = Path(__file__).resolve().parents[1] / "data"
GOOD = DATA / "ct_head_16x16.dcm"


def test_undecodable_slices_are_dropped_with_their_uid_and_reason(tmp_path):
    loaded = load_series(
        {
            "1.2.3.1": GOOD,
            "1.2.3.2": DATA / "ct_truncated_pixel_data.dcm",
            "1.2.3.3": DATA / "ct_without_pixel_data.dcm",
            "1.2.3.4": tmp_path / "gone.dcm",
        }
    )
    assert [str(ds.SOPInstanceUID) for ds in loaded.datasets] == [str(dcmread(GOOD).SOPInstanceUID)]
    reasons = {d.sop_instance_uid: d.reason for d in loaded.dropped}
    assert set(reasons) == {"1.2.3.2", "1.2.3.3", "1.2.3.4"}
    assert "less than expected" in reasons["1.2.3.2"]
    assert "Pixel Data" in reasons["1.2.3.3"]
    assert reasons["1.2.3.4"] == "spooled file missing"
    assert all(len(r) <= 160 and "\n" not in r for r in reasons.values())


def test_broken_jpeg_codestream_is_dropped(tmp_path):
    good = tmp_path / "jpeg.dcm"
    subprocess.run(["dcmcjpeg", "+e1", str(GOOD), str(good)], check=True, capture_output=True)
    ds = dcmread(good)
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(200)) + b"\xff\xd9"])
    broken = tmp_path / "broken.dcm"
    ds.save_as(broken)
    loaded = load_series({"good": good, "broken": broken})
    assert len(loaded.datasets) == 1
    [dropped] = loaded.dropped
    assert dropped.sop_instance_uid == "broken"
    assert "decode" in dropped.reason


def test_an_empty_series_is_still_an_error():
    with pytest.raises(StudyDataError, match="no instances"):
        load_series({})


def test_strict_reader_still_refuses_the_first_bad_slice(tmp_path):
    bad = tmp_path / "bad.dcm"
    shutil.copyfile(DATA / "ct_truncated_pixel_data.dcm", bad)
    with pytest.raises(StudyDataError, match="cannot decode bad.dcm"):
        read_series([GOOD, bad])
