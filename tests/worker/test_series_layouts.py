"""Series choice on scanner-like layouts built from real phantom files with mutated headers:
the header facts are read from the files as the worker reads them (worker.series_headers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from training.phantom import write_phantom_study
from triage.series_kind import is_sharp_kernel, parse_orientation
from worker.series_headers import read_series_header
from worker.series_selection import (
    SeriesCandidate,
    SliceFacts,
    select_series,
)

DEMO_RANGE = (4.0, 6.0)


def _layout_series(root: Path, name: str, number: int, *, thickness=5.0, slices=24, **tags):
    study = write_phantom_study(
        root / name,
        slices=slices,
        size=64,
        seed=number,
        slice_thickness=thickness,
        study_uid="1.2.826.0.1.3680043.8.498.1",
        series_uid=f"1.2.826.0.1.3680043.8.498.1.{number}",
    )
    facts = []
    for path in study.files:
        ds = dcmread(path)
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(path)
        orientation = parse_orientation("\\".join(map(str, ds.ImageOrientationPatient)))
        facts.append(SliceFacts(ds.SOPClassUID, orientation, float(ds.ImagePositionPatient[2])))
    header = read_series_header(study.files[0])
    return SeriesCandidate(study.series_uid, "CT", name, facts, header, number)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    return {
        "soft": _layout_series(root, "soft", 2, ConvolutionKernel="STANDARD"),
        "bone": _layout_series(
            root, "bone", 3, ConvolutionKernel="BONEPLUS", thickness=1.25, slices=96
        ),
        "localizer": _layout_series(
            root, "localizer", 1, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ),
        "mpr": _layout_series(
            root,
            "mpr",
            5,
            ImageType=["DERIVED", "SECONDARY", "REFORMATTED", "AXIAL"],
            thickness=1.0,
            slices=120,
        ),
        "thin": _layout_series(
            root, "thin", 6, ConvolutionKernel="H31s", thickness=1.0, slices=120
        ),
        "soft_twin": _layout_series(root, "soft_twin", 4, ConvolutionKernel="STANDARD"),
    }


def test_soft_tissue_series_is_read_not_bone_localizer_or_reformat(layout):
    chosen = select_series(
        [layout[k] for k in ("localizer", "bone", "mpr", "soft")], thickness_range=DEMO_RANGE
    )
    assert chosen.series_uid == layout["soft"].series_uid


def test_refusals_name_the_header_fact(layout):
    chosen = select_series([layout[k] for k in ("localizer", "bone", "mpr")])
    assert chosen.series_uid is None
    assert "localizer: localizer" in chosen.reason
    assert "bone: bone or sharp kernel BONEPLUS" in chosen.reason
    assert "mpr: reformat" in chosen.reason


def test_thick_series_in_the_bundles_range_beats_a_thinner_one_outside(layout):
    both = [layout["thin"], layout["soft"]]
    assert select_series(both, thickness_range=DEMO_RANGE).series_uid == layout["soft"].series_uid
    # Without a range the thin series wins: thick summary series lose to thin ones.
    assert select_series(both).series_uid == layout["thin"].series_uid


def test_equal_series_tie_break_on_the_lower_series_number(layout):
    pair = [layout["soft_twin"], layout["soft"]]
    assert select_series(pair).series_uid == layout["soft"].series_uid
    assert select_series(pair[::-1]).series_uid == layout["soft"].series_uid


@pytest.mark.parametrize(
    ("kernel", "sharp"),
    [
        ("STANDARD", False),
        ("SOFT", False),
        ("BONE", True),
        ("LUNG", True),
        ("H31s", False),
        ("Hr38", False),
        ("H70h", True),
        ("Hr64", True),
        ("FC26", False),
        ("FC30", True),
        ("UB", False),
        ("YD", True),
        (None, False),
    ],
)
def test_kernel_list(kernel, sharp):
    assert is_sharp_kernel(kernel) is sharp
