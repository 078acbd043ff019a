"""The fast path of :mod:`listener.header`: grouping tags read straight from the received bytes.

pydicom takes about 1 ms to read a CT header and convert the tags we keep, which is most
of an instance's budget when a scanner sends 700 slices a second. This scanner walks the
top-level elements of an uncompressed-header data set (Explicit or Implicit VR Little
Endian, which covers every compressed syntax too, as those encode the header explicitly),
skips sequences, stops at Pixel Data, and converts only our tags.

It answers only when it is sure to agree with pydicom: any value it would have to
interpret (non-ASCII text, a malformed number, a multi-valued single-valued field, an
element that runs past the buffer) makes it return ``None`` and the caller uses
:func:`listener.header.parse_header`. Big endian and deflated data sets always go there.
"""

from __future__ import annotations

import re
import struct

from listener.header import InstanceHeader, MalformedDatasetError
from listener.pixel_rules import (
    PixelFacts,
    encoding_problem,
    pixel_data_problem,
    trailing_problem,
)
from triage.uids import InvalidUIDError, require_uid

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"

_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}
_PIXEL_DATA = 0x7FE00010
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_SHORT_HEAD = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length (explicit VR)

_TAGS = {
    0x00080008: "ImageType",
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080020: "StudyDate",
    0x00080050: "AccessionNumber",
    0x00080060: "Modality",
    0x00081030: "StudyDescription",
    0x0008103E: "SeriesDescription",
    0x00100020: "PatientID",
    0x00180015: "BodyPartExamined",
    0x00180050: "SliceThickness",
    0x00181210: "ConvolutionKernel",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200011: "SeriesNumber",
    0x00200013: "InstanceNumber",
    0x00200032: "ImagePositionPatient",
    0x00200037: "ImageOrientationPatient",
    0x00201002: "ImagesInAcquisition",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280008: "NumberOfFrames",
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280100: "BitsAllocated",
}
_VRS = {
    **dict.fromkeys([0x00080016, 0x00080018, 0x0020000D, 0x0020000E], b"UI"),
    **dict.fromkeys([0x00080008, 0x00080060, 0x00180015, 0x00280004], b"CS"),
    **dict.fromkeys([0x00081030, 0x0008103E, 0x00100020], b"LO"),
    **dict.fromkeys([0x00080050, 0x00181210], b"SH"),
    0x00180050: b"DS",
    0x00080020: b"DA",
    **dict.fromkeys([0x00200011, 0x00200013, 0x00201002, 0x00280008], b"IS"),
    **dict.fromkeys([0x00200032, 0x00200037], b"DS"),
    **dict.fromkeys([0x00280010, 0x00280011, 0x00280002, 0x00280100], b"US"),
}
_INT = re.compile(rb"^ *[+-]?[0-9]{1,11} *$")
_DECIMAL = re.compile(rb"^ *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *$")


class _Unsure(Exception):
    """Something this scanner does not interpret exactly as pydicom would."""


class _Scan:
    def __init__(self, data: bytes, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.values: dict[int, bytes] = {}
        self.pixel_at: int | None = None

    def element(self, pos: int) -> tuple[int, int, int, bytes | None]:
        """(tag, value offset, value length, explicit VR) of the element at ``pos``."""
        data = self.data
        if pos + 8 > len(data):
            raise _Unsure("element header past the buffer")
        group, elem = struct.unpack_from("<HH", data, pos)
        tag = group << 16 | elem
        if self.implicit or group == 0xFFFE:
            (length,) = struct.unpack_from("<L", data, pos + 4)
            return tag, pos + 8, length, None
        vr = bytes(data[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise _Unsure("element header past the buffer")
            (length,) = struct.unpack_from("<L", data, pos + 8)
            return tag, pos + 12, length, vr
        if not vr.isalpha():
            raise _Unsure(f"unknown VR {vr!r}")
        (length,) = struct.unpack_from("<H", data, pos + 6)
        return tag, pos + 8, length, vr

    def skip_undefined(self, pos: int, depth: int) -> int:
        """Offset after an undefined-length sequence whose items start at ``pos``."""
        if depth > 8:
            raise _Unsure("sequences nested too deep")
        while True:
            tag, start, length, _ = self.element(pos)
            if tag == _SEQ_END:
                return start
            if tag != _ITEM:
                raise _Unsure("expected a sequence item")
            if length != _UNDEFINED:
                pos = start + length
                continue
            pos = start
            while True:
                tag, start, length, _ = self.element(pos)
                if tag == _ITEM_END:
                    pos = start
                    break
                pos = (
                    self.skip_undefined(start, depth + 1)
                    if length == _UNDEFINED
                    else start + length
                )

    def run(self) -> None:
        """Walk the top-level elements up to Pixel Data, keeping the values of :data:`_TAGS`.

        The common element (explicit VR, short length, defined) is decoded inline with one
        ``unpack_from``: a CT header has ~50 elements and a method call, a second unpack
        and a VR copy each cost ~2 us of its ~150. Items, long VRs and implicit VR go
        through :meth:`element`, which applies the same checks.
        """
        data = self.data
        values = self.values
        implicit = self.implicit
        head = _SHORT_HEAD.unpack_from
        pos = 0
        end = len(data)
        while pos < end:
            if implicit or pos + 8 > end:
                tag, start, length, vr = self.element(pos)
            else:
                group, elem, vr, length = head(data, pos)
                tag = group << 16 | elem
                start = pos + 8
                if group == 0xFFFE or vr in _LONG_VRS:
                    tag, start, length, vr = self.element(pos)
                elif not vr.isalpha():
                    raise _Unsure(f"unknown VR {vr!r}")
            if tag in _PIXEL_TAGS:
                self.pixel_at = pos if tag == _PIXEL_DATA else None
                if tag != _PIXEL_DATA:
                    raise _Unsure("float pixel data")
                return
            if length == _UNDEFINED:
                pos = self.skip_undefined(start, 0)
                continue
            if start + length > end:
                raise _Unsure("element value past the buffer")
            if tag in _TAGS:
                if vr is not None and vr != _VRS[tag]:
                    raise _Unsure(f"{_TAGS[tag]} with VR {vr!r}")
                values[tag] = bytes(data[start : start + length])
            pos = start + length


def _text(raw: bytes | None, limit: int) -> str | None:
    if raw is None:
        return None
    if b"\\" in raw or not raw.isascii():
        raise _Unsure("multi-valued or non-ASCII text")
    return raw.decode("ascii").strip(" \x00").strip()[:limit] or None


def _values(raw: bytes | None, limit: int, count: int) -> tuple[str, ...]:
    """The non-empty values of a multi-valued text element, as :mod:`listener.header` keeps them."""
    if raw is None:
        return ()
    if not raw.isascii():
        raise _Unsure("non-ASCII text")
    parts = (p.decode("ascii").strip(" \x00").strip()[:limit] for p in raw.split(b"\\"))
    return tuple(part for part in parts if part)[:count]


def _uid(raw: bytes | None, what: str) -> str:
    value = None
    if raw is not None:
        if not raw.isascii():
            raise _Unsure("non-ASCII UID")
        value = raw.decode("ascii").rstrip("\x00 ").lstrip(" ") or None
    return require_uid(value, what)


def _int(raw: bytes | None) -> int | None:
    if raw is None or not raw.strip(b" \x00"):
        return None
    if not _INT.match(raw.rstrip(b"\x00")):
        raise _Unsure("unusual IS value")
    return int(raw.rstrip(b"\x00"))


def _us(raw: bytes | None) -> int | None:
    if raw is None or len(raw) == 0:
        return None
    if len(raw) != 2:
        raise _Unsure("multi-valued US")
    return int(struct.unpack("<H", raw)[0])


def _float(raw: bytes | None) -> float | None:
    numbers = _floats(raw, 1) if raw is None or b"\\" not in raw else None
    return numbers[0] if numbers else None


def _floats(raw: bytes | None, count: int) -> tuple[float, ...] | None:
    if raw is None or not raw.strip(b" \x00"):
        return None
    parts = raw.rstrip(b"\x00").split(b"\\")
    if not all(_DECIMAL.match(p) for p in parts):
        raise _Unsure("unusual DS value")
    numbers = tuple(float(p) for p in parts)
    return numbers if len(numbers) == count else None


def scan_header(
    head: bytes, total_size: int, tail: bytes, transfer_syntax: str
) -> InstanceHeader | None:
    """The header of a received data set, or None when pydicom must decide.

    ``head`` is the start of the data set (all of it when the data set is that short),
    ``total_size`` its full length and ``tail`` its last few bytes, used to tell whether
    Pixel Data arrived whole. Raises :class:`MalformedDatasetError` for an invalid UID or
    a Pixel Data element cut short.
    """
    if transfer_syntax in (_BIG_ENDIAN, _DEFLATED):
        return None
    implicit = transfer_syntax == IMPLICIT_LE
    problem = encoding_problem(head[:8], implicit)
    if problem is not None:
        raise MalformedDatasetError(problem)
    scan = _Scan(head, implicit)
    try:
        scan.run()
        if scan.pixel_at is None and len(head) < total_size:
            return None  # the header did not end inside the bytes we looked at
        v = scan.values
        try:
            study_uid = _uid(v.get(0x0020000D), "StudyInstanceUID")
            series_uid = _uid(v.get(0x0020000E), "SeriesInstanceUID")
            sop_uid = _uid(v.get(0x00080018), "SOPInstanceUID")
            sop_class = _uid(v.get(0x00080016), "SOPClassUID")
        except InvalidUIDError as exc:
            raise MalformedDatasetError(str(exc)) from None
        header = InstanceHeader(
            study_uid=study_uid,
            series_uid=series_uid,
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            modality=_text(v.get(0x00080060), 16),
            body_part=_text(v.get(0x00180015), 64),
            series_description=_text(v.get(0x0008103E), 128),
            study_description=_text(v.get(0x00081030), 128),
            series_number=_int(v.get(0x00200011)),
            instance_number=_int(v.get(0x00200013)),
            image_position=_floats(v.get(0x00200032), 3),  # type: ignore[arg-type]
            image_orientation=_floats(v.get(0x00200037), 6),
            images_in_acquisition=_int(v.get(0x00201002)),
            accession_number=_text(v.get(0x00080050), 64),
            patient_id=_text(v.get(0x00100020), 64),
            study_date=_text(v.get(0x00080020), 8),
            rows=_us(v.get(0x00280010)),
            columns=_us(v.get(0x00280011)),
            has_pixel_data=scan.pixel_at is not None,
            image_type=_values(v.get(0x00080008), 16, 8),
            slice_thickness=_float(v.get(0x00180050)),
            convolution_kernel="\\".join(_values(v.get(0x00181210), 16, 8)) or None,
        )
        frames = v.get(0x00280008)
        if frames is not None and (_int(frames) or 0) < 1:
            return None  # let pydicom's path judge (and word) a bad frame count
        native = transfer_syntax in (EXPLICIT_LE, IMPLICIT_LE)
        if scan.pixel_at is not None:
            if not _pixel_data_whole(scan, scan.pixel_at, total_size, tail, native):
                return None  # let pydicom's path judge (and word) the truncation
            _, start, length, vr = scan.element(scan.pixel_at)
            problem = pixel_data_problem(
                PixelFacts(
                    vr=vr,
                    length=length,
                    encapsulated=not native,
                    rows=header.rows,
                    columns=header.columns,
                    samples_per_pixel=_us(v.get(0x00280002)),
                    bits_allocated=_us(v.get(0x00280100)),
                    frames=_int(frames),
                    photometric=_text(v.get(0x00280004), 16),
                )
            )
            if problem is not None:
                raise MalformedDatasetError(problem)
            end = start + length
            if length != _UNDEFINED and end != total_size:
                if end + 4 > len(head):
                    return None  # bytes after Pixel Data we cannot see: pydicom's path
                group, element = struct.unpack_from("<HH", head, end)
                problem = trailing_problem(group << 16 | element, total_size - end)
                if problem is not None:
                    raise MalformedDatasetError(problem)
        return header
    except _Unsure:
        return None


def _pixel_data_whole(scan: _Scan, pos: int, total_size: int, tail: bytes, native: bool) -> bool:
    """Whether the Pixel Data element at ``pos`` ends within the received bytes (an
    undefined length is only whole in an encapsulated transfer syntax)."""
    _, start, length, _ = scan.element(pos)
    if length == _UNDEFINED:
        return not native and tail.endswith(_SEQ_DELIMITER)
    return start + length <= total_size
