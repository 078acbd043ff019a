"""Phantom studies laid out as real scanners push them: a head series and what comes with it.

Why: a listener that waits for "every series whole" must tell the head series a model reads
from the localizer, dose pages, reformats and bone-kernel copies a scanner sends in the
same study, and must recognise heads that are not one evenly spaced stack (two-part
protocols, vertex first). Each layout here is one study written by
:func:`training.phantom.write_phantom_study` and then re-labelled with the header values
scanners use (Image Type, orientation, kernel, SOP class, numbering); pixels stay phantom
pixels, which completion never reads.

Public API
----------
``LAYOUTS``
    Names of the layouts, each described in :func:`write_layout`.
``write_layout(out_dir, name, seed=0) -> Layout``
    Write one layout; its ``files`` are in the order a scanner would send them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from training.phantom import write_phantom_study

SIZE = 64  # rows and columns: completion reads headers only, so keep the files small
HEAD_SLICES = 20
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]

LAYOUTS = (
    "localizer",
    "two_part",
    "bone_kernel",
    "coronal_mpr",
    "dose_page",
    "vertex_first",
    "missing_slice",
)


@dataclass(frozen=True)
class Layout:
    """One written layout.

    Attributes
    ----------
    name, study_uid
        The layout and its Study Instance UID.
    read_series_uid
        The axial soft-tissue series a model would read.
    files
        Every file, in sending order (extra series around the head series as scanners do).
    whole
        Whether the head series arrived whole (False for ``missing_slice``).
    """

    name: str
    study_uid: str
    read_series_uid: str
    files: list[Path]
    whole: bool


def _edit(path: Path, **values: object) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def _series(
    out_dir: Path,
    part: str,
    study_uid: str,
    *,
    seed: int,
    slices: int,
    thickness: float = 5.0,
    description: str = "HEAD ROUTINE",
) -> list[Path]:
    """One phantom series of ``study_uid`` without an announced count (geometry decides)."""
    written = write_phantom_study(
        out_dir / part,
        slices=slices,
        size=SIZE,
        seed=seed,
        study_uid=study_uid,
        series_uid=generate_uid(entropy_srcs=["layout", study_uid, part]),
        slice_thickness=thickness,
        series_description=description,
        images_in_acquisition=False,
    )
    return list(written.files)


def _localizer(out_dir: Path, study_uid: str, seed: int) -> list[Path]:
    files = _series(out_dir, "scout", study_uid, seed=seed, slices=1, description="SCOUT")
    _edit(
        files[0],
        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
        ImageOrientationPatient=SAGITTAL,
        SeriesNumber=1,
    )
    return files


def _dose_pages(out_dir: Path, study_uid: str, seed: int) -> list[Path]:
    """Pages 1 and 5 of a dose report (as the Philips study has): SC, no geometry."""
    files = _series(out_dir, "dose", study_uid, seed=seed, slices=2, description="DOSE REPORT")
    for path, number in zip(files, (1, 5), strict=True):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.ImageType = ["DERIVED", "SECONDARY", "DOSE_INFO"]
        ds.InstanceNumber = number
        ds.SeriesNumber = 900
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation"):
            delattr(ds, keyword)
        ds.save_as(path, enforce_file_format=True)
    return files


def write_layout(out_dir: Path, name: str, *, seed: int = 0) -> Layout:
    """Write layout ``name`` under ``out_dir``.

    ``localizer``: a one-image sagittal scout, then the head. ``two_part``: one series of
    10 slices 4 mm thick and apart, then 10 at 7 mm (the GE layout). ``bone_kernel``: the
    head, then a BONEPLUS copy of 1 mm slices every 5 mm (never whole by geometry).
    ``coronal_mpr``: the head, then a DERIVED coronal reformat numbered 1, 3, 5...
    ``dose_page``: the head, then dose pages 1 and 5 (Secondary Capture, no geometry).
    ``vertex_first``: the head numbered from the vertex down. ``missing_slice``: the head
    without its 10th slice, then a dose page.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`LAYOUTS`.
    """
    if name not in LAYOUTS:
        raise ValueError(f"name: unknown layout {name!r}; expected one of {LAYOUTS}")
    out_dir = Path(out_dir)
    study_uid = generate_uid(entropy_srcs=["layout-study", name, str(seed)])
    before: list[Path] = []
    after: list[Path] = []
    if name == "two_part":
        head = _series(out_dir, "head", study_uid, seed=seed, slices=20, thickness=4.0)
        for index, path in enumerate(head[10:]):
            z = 4.0 * 9 + 5.5 + 7.0 * index  # from the last 4 mm slice: (4 + 7) / 2, then 7
            ds = pydicom.dcmread(head[0])
            _edit(
                path,
                SliceThickness=7.0,
                SpacingBetweenSlices=None,
                ImagePositionPatient=[*ds.ImagePositionPatient[:2], ds.ImagePositionPatient[2] + z],
            )
    else:
        head = _series(out_dir, "head", study_uid, seed=seed, slices=HEAD_SLICES)
    if name == "localizer":
        before = _localizer(out_dir, study_uid, seed)
    elif name == "bone_kernel":
        after = _series(out_dir, "bone", study_uid, seed=seed, slices=HEAD_SLICES)
        for path in after:
            _edit(path, ConvolutionKernel="BONEPLUS", SliceThickness=1.0, SeriesNumber=3)
        for path in head:
            _edit(path, ConvolutionKernel="STANDARD")
    elif name == "coronal_mpr":
        after = _series(out_dir, "coronal", study_uid, seed=seed, slices=HEAD_SLICES)
        for number, path in enumerate(after):
            _edit(
                path,
                ImageType=["DERIVED", "SECONDARY", "MPR"],
                ImageOrientationPatient=CORONAL,
                InstanceNumber=2 * number + 1,
                SeriesNumber=4,
            )
    elif name == "dose_page":
        after = _dose_pages(out_dir, study_uid, seed)
    elif name == "vertex_first":
        for path in head:
            number = pydicom.dcmread(path, stop_before_pixels=True).InstanceNumber
            _edit(path, InstanceNumber=len(head) + 1 - number)
        head = head[::-1]
    elif name == "missing_slice":
        missing = head.pop(9)
        missing.unlink()
        after = _dose_pages(out_dir, study_uid, seed)
    read_uid = str(pydicom.dcmread(head[0], stop_before_pixels=True).SeriesInstanceUID)
    return Layout(name, study_uid, read_uid, before + head + after, name != "missing_slice")
