"""What a received image's Pixel Data and encoding must be for the worker to read it.

Checked at receive, where a refusal costs the sender one re-send and the bytes go to
quarantine with the reason, instead of in the worker, where one undecodable slice
used to fail its whole study. Only what is cheap to know without decoding: the Pixel
Data element's VR, its length against Rows x Columns x Samples x Bits Allocated / 8 x
Frames, what follows it, and whether the data set is encoded the way its presentation
context says. Both header readers (the byte scanner in :mod:`listener.fastpath` and
pydicom's in :mod:`listener.header`) feed the same facts to the same rules here.
"""

from __future__ import annotations

from dataclasses import dataclass

UNDEFINED_LENGTH = 0xFFFFFFFF
ALLOWED_PIXEL_VRS = (b"OB", b"OW")
"""PS3.5 8.2: native Pixel Data is OB or OW, encapsulated Pixel Data is OB (OW tolerated)."""

ALLOWED_AFTER_PIXEL_DATA = (0xFFFAFFFA, 0xFFFCFFFC)
"""Digital Signatures Sequence and Data Set Trailing Padding: the only tags after Pixel Data."""

KNOWN_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI "
    b"UL UN UR US UT UV".split()
)


@dataclass(frozen=True)
class PixelFacts:
    """What the header readers know of a data set's Pixel Data element (7FE0,0010)."""

    vr: bytes | None
    """Its VR as received, None in Implicit VR."""
    length: int
    """Its declared value length (``UNDEFINED_LENGTH`` for encapsulated fragments)."""
    encapsulated: bool
    """Whether the transfer syntax compresses pixels (fragments, undefined length)."""
    rows: int | None
    columns: int | None
    samples_per_pixel: int | None
    bits_allocated: int | None
    frames: int | None
    photometric: str | None = None


def expected_native_length(facts: PixelFacts) -> int | None:
    """Bytes native Pixel Data must have, or None when the image attributes are missing."""
    if not facts.rows or not facts.columns or not facts.bits_allocated:
        return None
    samples = facts.samples_per_pixel or 1
    if samples == 3 and facts.photometric in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        samples = 2  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    frames = facts.frames or 1
    bits = facts.rows * facts.columns * samples * facts.bits_allocated * frames
    return (bits + 7) // 8


def pixel_data_problem(facts: PixelFacts) -> str | None:
    """Why this Pixel Data element cannot be what its image attributes say, or None."""
    if facts.vr is not None and facts.vr not in ALLOWED_PIXEL_VRS:
        return f"Pixel Data has VR {facts.vr.decode('ascii', 'replace')}, not OB or OW"
    if facts.encapsulated:
        return None  # fragment lengths are checked by the decoder; the sequence end at receive
    if facts.length == UNDEFINED_LENGTH:
        return "native Pixel Data with undefined length"
    expected = expected_native_length(facts)
    if expected is None:
        return "native Pixel Data without Rows, Columns or Bits Allocated"
    if facts.length not in (expected, expected + expected % 2):  # odd lengths are padded
        return (
            f"native Pixel Data is {facts.length} bytes; Rows x Columns x Samples x "
            f"Bits Allocated / 8 x Frames is {expected}"
        )
    return None


def trailing_problem(next_tag: int | None, remaining: int) -> str | None:
    """Why ``remaining`` bytes after Pixel Data (next element tag ``next_tag``) are refused."""
    if remaining <= 0:
        return None
    if next_tag in ALLOWED_AFTER_PIXEL_DATA:
        return None
    return f"{remaining} bytes follow Pixel Data (a second Pixel Data or trailing garbage)"


def encoding_problem(first_element: bytes, implicit: bool) -> str | None:
    """Whether the data set's first element is encoded as its transfer syntax says.

    In Explicit VR bytes 4-5 of an element are its VR (two letters); in Implicit VR they
    are the low half of a 32-bit length, which for the short first elements of a data
    set is never two capital letters. A data set encoded the other way is stored under
    a transfer syntax that misdescribes it, and DCMTK cannot read the file.
    """
    if len(first_element) < 8:
        return None
    vr_like = bytes(first_element[4:6]) in KNOWN_VRS
    if implicit and vr_like:
        return "data set is encoded Explicit VR on an Implicit VR presentation context"
    if not implicit and not vr_like:
        return "data set is encoded Implicit VR on an Explicit VR presentation context"
    return None
