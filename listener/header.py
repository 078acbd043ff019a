"""Read only the tags that group an instance into its series and study.

Pixel data is never decoded on the receive path: we parse up to (not including) the
pixel data element and keep the rest as opaque bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from io import BytesIO
from typing import Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from listener.pixel_rules import (
    UNDEFINED_LENGTH,
    PixelFacts,
    encoding_problem,
    pixel_data_problem,
    trailing_problem,
)
from triage.uids import require_uid


class MalformedDatasetError(ValueError):
    """The received bytes are not a dataset we can file: the reason goes to quarantine."""


@dataclass(frozen=True)
class InstanceHeader:
    """Grouping and geometry tags of one instance (no patient names kept here)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str | None
    body_part: str | None
    series_description: str | None
    study_description: str | None
    series_number: int | None
    instance_number: int | None
    image_position: tuple[float, float, float] | None
    image_orientation: tuple[float, ...] | None
    images_in_acquisition: int | None
    accession_number: str | None
    patient_id: str | None
    study_date: str | None
    rows: int | None = None
    columns: int | None = None
    has_pixel_data: bool | None = None  # None when it cannot be told without inflating
    image_type: tuple[str, ...] = ()
    """Image Type values (ORIGINAL/DERIVED, PRIMARY/SECONDARY, AXIAL/LOCALIZER...): with the
    SOP class, orientation and kernel, what :func:`listener.completion.role_of` reads."""
    slice_thickness: float | None = None
    convolution_kernel: str | None = None  # values joined by a backslash, as encoded

    @property
    def position_along_normal(self) -> float | None:
        """Slice position projected on the normal of the image plane (handles gantry tilt)."""
        if self.image_position is None:
            return None
        if self.image_orientation is None or len(self.image_orientation) != 6:
            return self.image_position[2]
        r, c = self.image_orientation[:3], self.image_orientation[3:]
        normal = (
            r[1] * c[2] - r[2] * c[1],
            r[2] * c[0] - r[0] * c[2],
            r[0] * c[1] - r[1] * c[0],
        )
        return sum(p * n for p, n in zip(self.image_position, normal, strict=True))


def _text(ds: Dataset, keyword: str, limit: int) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip()[:limit] or None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _floats(ds: Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _values(ds: Dataset, keyword: str, limit: int, count: int) -> tuple[str, ...]:
    """The non-empty values of a multi-valued text element, each stripped and cut."""
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else list(value)
    parts = (str(item).strip()[:limit] for item in items)
    return tuple(part for part in parts if part)[:count]


def _float(ds: Dataset, keyword: str) -> float | None:
    """A single decimal value; None when absent, malformed or (wrongly) multi-valued."""
    value = ds.get(keyword)
    if value is None or value == "" or isinstance(value, MultiValue):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def header_from_dataset(ds: Dataset) -> InstanceHeader:
    """Extract and validate the grouping tags; raise :class:`MalformedDatasetError` if unusable."""
    try:
        study_uid = require_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
        series_uid = require_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
        sop_uid = require_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
        sop_class = require_uid(ds.get("SOPClassUID"), "SOPClassUID")
    except ValueError as exc:
        raise MalformedDatasetError(str(exc)) from None
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "") and (_int(ds, "NumberOfFrames") or 0) < 1:
        raise MalformedDatasetError(
            f"NumberOfFrames is not a positive integer: {str(frames)[:16]!r}"
        )
    position = _floats(ds, "ImagePositionPatient", 3)
    return InstanceHeader(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        modality=_text(ds, "Modality", 16),
        body_part=_text(ds, "BodyPartExamined", 64),
        series_description=_text(ds, "SeriesDescription", 128),
        study_description=_text(ds, "StudyDescription", 128),
        series_number=_int(ds, "SeriesNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        image_position=position,  # type: ignore[arg-type]
        image_orientation=_floats(ds, "ImageOrientationPatient", 6),
        images_in_acquisition=_int(ds, "ImagesInAcquisition"),
        accession_number=_text(ds, "AccessionNumber", 64),
        patient_id=_text(ds, "PatientID", 64),
        study_date=_text(ds, "StudyDate", 8),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        image_type=_values(ds, "ImageType", 16, 8),
        slice_thickness=_float(ds, "SliceThickness"),
        convolution_kernel="\\".join(_values(ds, "ConvolutionKernel", 16, 8)) or None,
    )


_PIXEL_DATA_TAG = {False: b"\xe0\x7f\x10\x00", True: b"\x7f\xe0\x00\x10"}


_SEQUENCE_DELIMITER = {
    False: b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",
    True: b"\xff\xfe\xe0\xdd\x00\x00\x00\x00",
}


def _check_pixel_data_whole(
    encoded: bytes, start: int, implicit: bool, big: bool, encapsulated: bool
) -> None:
    """Raise when the Pixel Data element starting at ``start`` runs past the received bytes,
    or has an undefined length in a native (uncompressed) transfer syntax, where PS3.5
    requires an explicit length."""
    length_at = start + (4 if implicit else 8)
    length = int.from_bytes(encoded[length_at : length_at + 4], "big" if big else "little")
    if length == 0xFFFFFFFF and not encapsulated:
        raise MalformedDatasetError("native Pixel Data with undefined length")
    if length == 0xFFFFFFFF:  # encapsulated: the fragments must end with a delimiter
        if encoded.find(_SEQUENCE_DELIMITER[big], length_at + 4) == -1:
            raise MalformedDatasetError("Pixel Data is cut short: no sequence delimiter")
    elif length_at + 4 + length > len(encoded):
        raise MalformedDatasetError(
            f"Pixel Data is cut short: {length} bytes declared, "
            f"{max(len(encoded) - length_at - 4, 0)} received"
        )


def _data_set_start(encoded: bytes) -> int | None:
    """Offset of the data set after the preamble and file meta (None if not told by it)."""
    if encoded[128:132] != b"DICM" or encoded[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 144 + int.from_bytes(encoded[140:144], "little")


def _pixel_facts(ds: Dataset, encoded: bytes, start: int, implicit: bool, big: bool) -> PixelFacts:
    order: Literal["big", "little"] = "big" if big else "little"
    vr = None if implicit else bytes(encoded[start + 4 : start + 6])
    length_at = start + (4 if implicit else 8)
    return PixelFacts(
        vr=vr,
        length=int.from_bytes(encoded[length_at : length_at + 4], order),
        encapsulated=bool(ds.file_meta.TransferSyntaxUID.is_encapsulated),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        samples_per_pixel=_int(ds, "SamplesPerPixel"),
        bits_allocated=_int(ds, "BitsAllocated"),
        frames=_int(ds, "NumberOfFrames"),
        photometric=_text(ds, "PhotometricInterpretation", 16),
    )


def _check_pixel_data(ds: Dataset, encoded: bytes, start: int, implicit: bool, big: bool) -> None:
    """Raise when the Pixel Data element at ``start`` breaks :mod:`listener.pixel_rules`."""
    facts = _pixel_facts(ds, encoded, start, implicit, big)
    problem = pixel_data_problem(facts)
    if problem is None and facts.length != UNDEFINED_LENGTH:
        end = start + (8 if implicit else 12) + facts.length
        next_tag = None
        if len(encoded) >= end + 4:
            group, element = (
                int.from_bytes(encoded[end + i : end + i + 2], "big" if big else "little")
                for i in (0, 2)
            )
            next_tag = group << 16 | element
        problem = trailing_problem(next_tag, len(encoded) - end)
    if problem is not None:
        raise MalformedDatasetError(problem)


def parse_header(encoded: bytes) -> InstanceHeader:
    """Parse a DICOM file's bytes (preamble and file meta included) up to the pixel data.

    Raises :class:`MalformedDatasetError` when the bytes cannot be filed: a dataset whose
    Pixel Data element is cut short (a truncated transfer), breaks
    :mod:`listener.pixel_rules`, or is encoded otherwise than its transfer syntax says.
    """
    try:
        stream = BytesIO(encoded)
        ds = dcmread(stream, stop_before_pixels=True)
        header = header_from_dataset(ds)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and not syntax.is_deflated:
            big = not syntax.is_little_endian
            implicit = bool(syntax.is_implicit_VR)
            data_start = _data_set_start(encoded)
            if data_start is not None and not big:
                problem = encoding_problem(encoded[data_start : data_start + 8], implicit)
                if problem is not None:
                    raise MalformedDatasetError(problem)
            tag = _PIXEL_DATA_TAG[big]
            start = stream.tell()  # dcmread stops at the start of the Pixel Data element
            present = encoded[start : start + 4] == tag
            if present:
                _check_pixel_data_whole(encoded, start, implicit, big, syntax.is_encapsulated)
                _check_pixel_data(ds, encoded, start, implicit, big)
            header = replace(header, has_pixel_data=present)
        return header
    except MalformedDatasetError:
        raise
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OverflowError) as exc:
        raise MalformedDatasetError(f"cannot parse dataset: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # pydicom raises assorted errors on garbage; none may escape
        raise MalformedDatasetError(f"cannot parse dataset: {type(exc).__name__}: {exc}") from None
