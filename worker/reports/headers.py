"""Source headers as the builders need them: parse tolerantly, build strictly.

Real scanners and archives send headers highdicom would refuse to copy: a SOP Class UID only
in the file meta, Type 2 patient and study attributes left out, "identity removed" without
the method, empty geometry. The documents must still be made (and stay valid), so the
builders read copies completed here, never the caller's datasets.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

from highdicom.sr import ImageLibraryEntryDescriptors
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

PATIENT_STUDY_KEYWORDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
"""Patient and study attributes (Type 2: present, may be empty) highdicom copies from the
first evidence item, reading each as an attribute."""

# What highdicom's image-library descriptors read from a cross-sectional image.
_LIBRARY_GEOMETRY = (
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
)

UNSTATED_DEIDENTIFICATION = "identity removed before receipt; method not stated by the source"


def completed(ds: Dataset) -> Dataset:
    """A copy of ``ds`` with SOP Class and Instance UIDs taken from its file meta if missing."""
    out = copy.deepcopy(ds)
    meta = getattr(ds, "file_meta", None)
    if "SOPClassUID" not in out and meta is not None and "MediaStorageSOPClassUID" in meta:
        out.SOPClassUID = meta.MediaStorageSOPClassUID
    if "SOPInstanceUID" not in out and meta is not None and "MediaStorageSOPInstanceUID" in meta:
        out.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return out


def completed_all(headers: Iterable[Dataset]) -> tuple[Dataset, ...]:
    """:func:`completed` of each header."""
    return tuple(completed(ds) for ds in headers)


def study_reference(header: Dataset) -> Dataset:
    """The header the SR copies its patient and study modules from, made copyable.

    Missing Type 2 attributes become present and empty; a source that says its patient
    identity was removed but not how gets that stated (Type 1C), instead of an SR that
    fails validation for the source's omission.
    """
    reference = completed(header)
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword not in reference:
            setattr(reference, keyword, "")
    if str(reference.get("PatientIdentityRemoved", "")).upper() == "YES" and not (
        reference.get("DeidentificationMethod")
        or reference.get("DeidentificationMethodCodeSequence")
    ):
        reference.DeidentificationMethod = UNSTATED_DEIDENTIFICATION
    return reference


def describable(ds: Dataset) -> bool:
    """Whether highdicom can describe ``ds`` in an Image Library (its geometry is whole).

    An image whose pixel spacing, position or thickness is empty is left out of the
    library; it is still referenced as evidence and as a finding's source image.
    """
    if all(ds.get(keyword) not in (None, "") for keyword in _LIBRARY_GEOMETRY):
        return True  # what highdicom reads is all there: no trial build (it is slow)
    try:
        ImageLibraryEntryDescriptors(ds)
    except (AttributeError, TypeError, ValueError) as exc:
        log.warning("image %s left out of the image library: %s", ds.get("SOPInstanceUID"), exc)
        return False
    return True
