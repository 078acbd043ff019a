"""Malformed inputs for fuzzing the listener's intake and the worker's decoding.

Every generator is a pure function of a ``random.Random`` (input ``i`` of a run is
``Random(f"{seed}:{target}:{i}")``), so any input a run reports can be made again from its
seed and index alone. Mutations start from real, valid data: a well-formed association
request (:func:`bench.fuzz_peer.associate_rq`), real C-STORE/C-ECHO command sets, and
the data sets of real files (``tests/data``, pydicom's test files, phantom slices), and
are aimed where parsers break: declared lengths (zero, odd, off by two, gigabytes,
undefined), value representations, truncation, dropped or doubled elements, UIDs that
are empty, too long, non-ASCII or path-like, sequences nested thousands deep, Pixel Data
that disagrees with Rows/Columns, and compressed frames declaring gigapixel images.
"""

from __future__ import annotations

import copy
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom.dsutils import encode

from bench.fuzz_peer import associate_rq, echo_command

SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEGLSLossless)
"""Transfer syntaxes a fuzz data set may be in (each has a context in bench.fuzz_peer)."""

UID_PLACEHOLDER = "1.2.826.0.1.3680043.10.1161.7." + "9" * 28
"""A fixed-length SOP Instance UID in every base data set, replaced per input by a fresh one
of the same length (so each input is a new instance without re-encoding)."""

LONG_VRS = {
    b"OB",
    b"OW",
    b"OF",
    b"OD",
    b"OL",
    b"OV",
    b"SQ",
    b"UT",
    b"UN",
    b"UC",
    b"UR",
    b"SV",
    b"UV",
}
LENGTHS = (0, 1, 3, 0xFFFFFFFF, 0xFFFFFFFE, 0x40000000, 0x7FFFFFFF, 0x80000000, 0xFFFF, 0x10000)
BAD_UIDS = (
    b"",
    b" ",
    b"../../../../etc/passwd",
    b"1.2.3/4",
    b"1..2",
    b".1.2",
    b"1.2." + b"9" * 80,
    b"abc",
    b"1.2.\xc3\xa9",
    b"1.2.\x00.3",
    b"\\1.2",
    b"1.02.3",
)
VRS = (
    b"AE",
    b"CS",
    b"DS",
    b"FD",
    b"IS",
    b"LO",
    b"OB",
    b"OW",
    b"SQ",
    b"UI",
    b"UL",
    b"UN",
    b"US",
    b"UT",
    b"XX",
    b"\x00\x00",
)
DIMSE_COMMANDS = (
    0x0001,
    0x8001,
    0x0010,
    0x0020,
    0x0021,
    0x0030,
    0x8030,
    0x0100,
    0x0110,
    0x0120,
    0x0130,
    0x0140,
    0x0150,
    0x0FFF,
    0x0000,
    0xFFFF,
)


@dataclass(frozen=True)
class BaseDataset:
    """One valid data set to mutate: its encoding, its bytes and its element table."""

    name: str
    syntax: str
    data: bytes
    elements: tuple[tuple[int, int, int, int], ...]
    """(tag, header offset, length-field offset, length-field size) of top-level elements."""

    @property
    def implicit(self) -> bool:
        return self.syntax == ImplicitVRLittleEndian


def _element_table(data: bytes, implicit: bool) -> tuple[tuple[int, int, int, int], ...]:
    ds = read_dataset(BytesIO(data), implicit, True)
    table = []
    for tag in sorted(ds._dict):
        raw = ds._dict[tag]
        tell = raw.value_tell  # type: ignore[union-attr]
        if implicit:
            table.append((int(tag), tell - 8, tell - 4, 4))
        else:
            vr = data[tell - 8 : tell - 6] if data[tell - 6 : tell - 4] == b"\0\0" else b""
            if vr in LONG_VRS:
                table.append((int(tag), tell - 12, tell - 4, 4))
            else:
                table.append((int(tag), tell - 8, tell - 2, 2))
    return tuple(table)


def base_dataset(name: str, ds: Dataset, syntax: str) -> BaseDataset | None:
    """``ds`` as a CT data set in ``syntax`` with the placeholder SOP Instance UID."""
    ds = copy.deepcopy(ds)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = UID_PLACEHOLDER
    ds.pop("FileMetaInformationGroupLength", None)
    for element in list(ds.group_dataset(0x0002)):
        del ds[element.tag]
    implicit = syntax == ImplicitVRLittleEndian
    try:
        data = encode(ds, implicit, True)
        if data is None:
            return None
        return BaseDataset(name, syntax, data, _element_table(data, implicit))
    except Exception:  # a test file pydicom itself cannot re-encode: not a useful seed
        return None


def load_corpus(files: Iterable[Path], phantom: Iterable[Path] = ()) -> list[BaseDataset]:
    """Base data sets from real files whose encoding has a fuzz context, and their
    re-encodings: every native file also as implicit and explicit VR, and RLE."""
    bases: list[BaseDataset] = []
    for path in [*phantom, *files]:
        try:
            ds = pydicom.dcmread(path, force=True)
            syntax = ds.file_meta.TransferSyntaxUID
        except Exception:
            continue
        if syntax not in SYNTAXES or "PixelData" not in ds:
            continue
        variants = [syntax]
        if not syntax.is_compressed:
            variants = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            try:
                rle = copy.deepcopy(ds)
                rle.compress(RLELossless)
                made = base_dataset(f"{path.name}:rle", rle, RLELossless)
                if made is not None:
                    bases.append(made)
            except Exception:
                pass
        for variant in variants:
            made = base_dataset(f"{path.name}:{variant.name}", ds, variant)
            if made is not None:
                bases.append(made)
    return bases


# -- data set mutations ---------------------------------------------------------------------
def _pick_element(rng: random.Random, base: BaseDataset) -> tuple[int, int, int, int]:
    return rng.choice(base.elements)


def _find(base: BaseDataset, tag: int) -> tuple[int, int, int, int] | None:
    return next((e for e in base.elements if e[0] == tag), None)


def _element_end(base: BaseDataset, data: bytes, element: tuple[int, int, int, int]) -> int:
    _, _, length_at, size = element
    length = int.from_bytes(data[length_at : length_at + size], "little")
    if length == 0xFFFFFFFF:  # undefined: up to the next element we know, else the end
        later = [e[1] for e in base.elements if e[1] > element[1]]
        return min(later) if later else len(data)
    return length_at + size + length


def _encode_element(base: BaseDataset, tag: int, vr: bytes, value: bytes) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if base.implicit:
        return head + struct.pack("<L", len(value)) + value
    if vr in LONG_VRS:
        return head + vr + b"\0\0" + struct.pack("<L", len(value)) + value
    return head + vr + struct.pack("<H", len(value) & 0xFFFF) + value


def _replace_value(base: BaseDataset, data: bytes, tag: int, vr: bytes, value: bytes) -> bytes:
    element = _find(base, tag)
    if element is None:
        return data
    end = _element_end(base, data, element)
    return data[: element[1]] + _encode_element(base, tag, vr, value) + data[end:]


def mutate_truncate(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    return data[: rng.randrange(0, max(1, len(data)))]


def mutate_flip(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def mutate_length(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    """Rewrite one element's declared length: zero, odd, off by two, gigabytes, undefined."""
    _, _, at, size = _pick_element(rng, base)
    current = int.from_bytes(data[at : at + size], "little")
    choice = rng.choice(
        [*LENGTHS, current + 2, max(0, current - 2), current * 2, rng.getrandbits(32)]
    )
    choice &= (1 << (8 * size)) - 1
    return data[:at] + choice.to_bytes(size, "little") + data[at + size :]


def mutate_vr(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    if base.implicit:
        return mutate_length(rng, base, data)
    _, header, _, _ = _pick_element(rng, base)
    return data[: header + 4] + rng.choice(VRS) + data[header + 6 :]


def mutate_drop(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    element = _pick_element(rng, base)
    return data[: element[1]] + data[_element_end(base, data, element) :]


def mutate_duplicate(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    element = _pick_element(rng, base)
    end = _element_end(base, data, element)
    return data[:end] + data[element[1] : end] + data[end:]


def mutate_uid(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    """An invalid Study/Series/SOP Instance UID (empty, path-like, too long, non-ASCII)."""
    tag = rng.choice([0x0020000D, 0x0020000E, 0x00080018, 0x00080016])
    value = rng.choice(BAD_UIDS)
    return _replace_value(base, data, tag, b"UI", value + (b"\0" if len(value) % 2 else b""))


def deep_sequence(depth: int, implicit: bool, tag: int = 0x00081140) -> bytes:
    """A sequence element nested ``depth`` levels deep, every length undefined."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    open_sq = head + (b"\xff\xff\xff\xff" if implicit else b"SQ\0\0\xff\xff\xff\xff")
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    item_end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    seq_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return (open_sq + item) * depth + (item_end + seq_end) * depth


def mutate_deep_sequence(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    """Insert, in tag order, a sequence nested 10 to 20,000 levels deep."""
    depth = rng.choice([10, 100, 1000, 5000, 20000])
    after = [e for e in base.elements if e[0] > 0x00081140]
    at = after[0][1] if after else len(data)
    return data[:at] + deep_sequence(depth, base.implicit) + data[at:]


def mutate_pixel_header(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    """Rows/Columns/Bits Allocated/Samples that disagree with the Pixel Data (a gigapixel
    frame on a compressed data set is a decompression bomb)."""
    tag = rng.choice([0x00280010, 0x00280011, 0x00280100, 0x00280002, 0x00280008])
    if tag == 0x00280008:
        return _replace_value(
            base, data, tag, b"IS", rng.choice([b"0 ", b"-1", b"99999999", b"x "])
        )
    value = rng.choice([0, 1, 3, 255, 4096, 65535, rng.getrandbits(16)])
    return _replace_value(base, data, tag, b"US", struct.pack("<H", value))


def mutate_bomb(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    """A decompression bomb: a small (compressed) frame declaring 65535 x 65535 pixels,
    sometimes times many frames; the decoder would allocate gigabytes for it."""
    side = struct.pack("<H", 65535)
    data = _replace_value(base, data, 0x00280010, b"US", side)
    data = _replace_value(_retabled(base, data), data, 0x00280011, b"US", side)
    if rng.random() < 0.3:
        data = _replace_value(_retabled(base, data), data, 0x00280008, b"IS", b"1000")
    return data


def _retabled(base: BaseDataset, data: bytes) -> BaseDataset:
    """``base`` with the element table of ``data`` (after an edit moved offsets)."""
    try:
        return BaseDataset(base.name, base.syntax, data, _element_table(data, base.implicit))
    except Exception:
        return base


def mutate_pixel_data(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    """Pixel Data cut, padded, emptied, made odd or given a foreign VR."""
    element = _find(base, 0x7FE00010)
    if element is None:
        return mutate_flip(rng, base, data)
    _, header, at, size = element
    end = _element_end(base, data, element)
    value = data[at + size : end]
    kind = rng.choice(["cut", "pad", "empty", "odd", "vr", "trailer"])
    if kind == "cut":
        value = value[: rng.randrange(0, max(1, len(value)))]
    elif kind == "pad":
        value = value + bytes(rng.randint(1, 4096))
    elif kind == "empty":
        value = b""
    elif kind == "odd":
        value = value[:-1] if value else b"\0"
    vr = rng.choice([b"OB", b"OW", b"UN", b"UT", b"OF", b"SQ"]) if kind == "vr" else b"OW"
    if kind == "trailer":
        return data + _encode_element(base, 0x7FE00010, b"OW", b"\0\0")
    if data[at : at + size] == b"\xff\xff\xff\xff" and kind in ("cut", "empty", "odd"):
        return data[:header] + _encode_element(base, 0x7FE00010, b"OB", value)
    return data[:header] + _encode_element(base, 0x7FE00010, vr, value) + data[end:]


def mutate_gigabyte_tail(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    """A trailing element declaring 1-4 GiB and carrying a few bytes."""
    length = rng.choice([0x40000000, 0x7FFFFFFF, 0xFFFFFFF0])
    tag = rng.choice([0x7FE00010, 0x7FE10010, 0xFFFEE000, 0x00091010])
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    vr = b"" if base.implicit else b"OB\0\0"
    return data + head + vr + struct.pack("<L", length) + bytes(rng.randint(0, 64))


def mutate_garbage(rng: random.Random, base: BaseDataset, data: bytes) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 7, 8, 128, 4096]))


DATASET_MUTATIONS: tuple[Callable[[random.Random, BaseDataset, bytes], bytes], ...] = (
    mutate_truncate,
    mutate_flip,
    mutate_length,
    mutate_length,
    mutate_vr,
    mutate_drop,
    mutate_duplicate,
    mutate_uid,
    mutate_deep_sequence,
    mutate_pixel_header,
    mutate_pixel_data,
    mutate_bomb,
    mutate_gigabyte_tail,
    mutate_garbage,
)


def mutated_dataset(
    rng: random.Random, corpus: Sequence[BaseDataset]
) -> tuple[BaseDataset, bytes, list[str]]:
    """One malformed data set: a base and 1-3 mutations (names returned for the report)."""
    base = rng.choice(corpus)
    data = base.data
    names = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        mutation = rng.choice(DATASET_MUTATIONS)
        data = mutation(rng, base, data)
        names.append(mutation.__name__.removeprefix("mutate_"))
    return base, data, names


def with_uid(data: bytes, uid: str) -> bytes:
    """``data`` with the placeholder SOP Instance UID replaced by ``uid`` (same length)."""
    assert len(uid) == len(UID_PLACEHOLDER), "the UID must keep the placeholder's length"
    return data.replace(UID_PLACEHOLDER.encode(), uid.encode())


def fresh_uid(index: int, run: int) -> str:
    """A valid SOP Instance UID of the placeholder's length, unique per run and input."""
    prefix = "1.2.826.0.1.3680043.10.1161.7."
    return prefix + f"1{run % 10**8:08d}{index:019d}"  # no leading zero in a component


# -- association request mutations ------------------------------------------------------
def _items(request: bytes) -> list[tuple[int, int]]:
    """(offset, length) of the top-level items of an A-ASSOCIATE-RQ and their sub-items."""
    found = []
    pos = 74
    while pos + 4 <= len(request):
        item_type, _, length = struct.unpack_from(">BBH", request, pos)
        found.append((pos, length))
        if item_type == 0x20:
            sub = pos + 8
            while sub + 4 <= pos + 4 + length:
                (sub_length,) = struct.unpack_from(">H", request, sub + 2)
                found.append((sub, sub_length))
                sub += 4 + sub_length
        elif item_type == 0x50:
            sub = pos + 4
            while sub + 4 <= pos + 4 + length:
                (sub_length,) = struct.unpack_from(">H", request, sub + 2)
                found.append((sub, sub_length))
                sub += 4 + sub_length
        pos += 4 + length
    return found


def _many_contexts(count: int) -> bytes:
    from bench.fuzz_peer import _item

    items = [_item(0x10, b"1.2.840.10008.3.1.1.1")]
    for index in range(count):
        sub = _item(0x30, CTImageStorage.encode()) + _item(0x40, ExplicitVRLittleEndian.encode())
        items.append(_item(0x20, struct.pack(">BBBB", (2 * index + 1) & 0xFF, 0, 0, 0) + sub))
    items.append(_item(0x50, _item(0x51, struct.pack(">L", 16384))))
    body = struct.pack(">HH", 1, 0) + b"TRIAGE".ljust(16) + b"FUZZER".ljust(16) + b"\0" * 32
    body += b"".join(items)
    return struct.pack(">BBL", 1, 0, len(body)) + body


def mutated_association(rng: random.Random) -> tuple[bytes, list[str]]:
    """Bytes to send on a fresh connection in place of an A-ASSOCIATE-RQ."""
    request = associate_rq(
        calling=rng.choice(["FUZZER", "SCANNER1", "A"]),
        max_pdu=rng.choice([0, 1, 16384, 131072, 0xFFFFFFFF]),
    )
    kind = rng.choice(
        [
            "flip",
            "truncate",
            "pdu_length",
            "item_length",
            "item_length",
            "ae",
            "version",
            "pdu_type",
            "garbage",
            "extend",
            "contexts",
            "two_pdus",
            "header_only",
        ]
    )
    data = bytearray(request)
    if kind == "flip":
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(1, len(data)) :]
    elif kind == "pdu_length":
        struct.pack_into(
            ">L", data, 2, rng.choice([*LENGTHS, len(data) - 7, len(data) - 5, 68, 69])
        )
    elif kind == "item_length":
        offset, length = rng.choice(_items(request))
        struct.pack_into(
            ">H",
            data,
            offset + 2,
            rng.choice([0, 1, 2, 3, 0xFFFF, length + 1, max(0, length - 1), rng.getrandbits(16)]),
        )
    elif kind == "ae":
        at = rng.choice([10, 26])
        data[at : at + 16] = rng.choice(
            [b" " * 16, b"\0" * 16, b"\xff" * 16, rng.randbytes(16), b"\\" * 16]
        )
    elif kind == "version":
        struct.pack_into(">H", data, 6, rng.getrandbits(16))
    elif kind == "pdu_type":
        data[0] = rng.choice([0x00, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x81, 0xFF])
    elif kind == "garbage":
        data = bytearray(rng.randbytes(rng.choice([1, 5, 6, 7, 64, 1024, 70000])))
    elif kind == "extend":
        data += rng.randbytes(rng.randint(1, 512))
    elif kind == "contexts":
        data = bytearray(_many_contexts(rng.choice([0, 127, 128, 129, 255, 400])))
    elif kind == "two_pdus":
        data += bytes(request)
    elif kind == "header_only":
        data = data[:6]
    return bytes(data), [kind]


# -- command set mutations ---------------------------------------------------------------
def _command_elements(command: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 8 <= len(command):
        group, elem, length = struct.unpack_from("<HHL", command, pos)
        out.append(((group << 16) | elem, command[pos + 8 : pos + 8 + length]))
        pos += 8 + length
    return out


def _command_bytes(elements: list[tuple[int, bytes]], fix_group_length: bool = True) -> bytes:
    body = b"".join(
        struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value
        for tag, value in elements
        if tag != 0x00000000
    )
    group = [(t, v) for t, v in elements if t == 0x00000000]
    if fix_group_length and group:
        return struct.pack("<HHLL", 0, 0, 4, len(body)) + body
    head = b"".join(struct.pack("<HHL", t >> 16, t & 0xFFFF, len(v)) + v for t, v in group)
    return head + body


def _with_element_length(rng: random.Random, command: bytes) -> bytes:
    """One element's 4-byte length field rewritten (zero, off by one, gigabytes)."""
    offsets = []
    pos = 0
    while pos + 8 <= len(command):
        offsets.append(pos + 4)
        pos += 8 + struct.unpack_from("<L", command, pos + 4)[0]
    if not offsets:
        return command
    data = bytearray(command)
    struct.pack_into("<L", data, rng.choice(offsets), rng.choice([*LENGTHS, 2, 5, 9]))
    return bytes(data)


@dataclass(frozen=True)
class CommandInput:
    """A (possibly broken) command set, the data set to follow it, and how to send them."""

    command: bytes
    dataset: bytes | None
    context_id: int | None
    """None: use the context the command is for; else this (possibly unaccepted) id."""
    control: int
    """PDV control byte of the command's single fragment (0x03 = command, last)."""
    split: int
    """Send the command in fragments of this many bytes (0 = one fragment)."""
    kinds: tuple[str, ...]


def mutated_command(rng: random.Random, store: bytes, dataset: bytes) -> CommandInput:
    """A C-STORE-RQ or C-ECHO-RQ command set with 1-3 element-level mutations."""
    is_store = rng.random() < 0.7
    elements = _command_elements(store if is_store else echo_command(rng.randint(1, 0xFFFF)))
    kinds = []
    fix = True
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.choice(
            [
                "value",
                "length",
                "drop",
                "duplicate",
                "unknown",
                "field",
                "dataset_type",
                "uid",
                "group_length",
                "truncate",
                "control",
                "context",
                "split",
            ]
        )
        kinds.append(kind)
        index = rng.randrange(len(elements)) if elements else 0
        if kind == "value" and elements:
            tag, _ = elements[index]
            elements[index] = (tag, rng.randbytes(rng.choice([0, 1, 2, 3, 4, 8, 65, 200])))
        elif kind == "drop" and elements:
            del elements[index]
        elif kind == "duplicate" and elements:
            elements.insert(index, elements[index])
        elif kind == "unknown":
            tag = rng.choice(
                [0x00000001, 0x00000903, 0x00001031, 0x00080016, 0x7FE00010, rng.getrandbits(16)]
            )
            elements.insert(
                rng.randrange(len(elements) + 1), (tag, rng.randbytes(rng.randint(0, 16)))
            )
        elif kind == "field":
            elements = [
                (t, struct.pack("<H", rng.choice(DIMSE_COMMANDS))) if t == 0x00000100 else (t, v)
                for t, v in elements
            ]
        elif kind == "dataset_type":
            elements = [
                (t, struct.pack("<H", rng.choice([0x0000, 0x0101, 0x0102, 0xFFFF])))
                if t == 0x00000800
                else (t, v)
                for t, v in elements
            ]
        elif kind == "uid":
            tag = rng.choice([0x00000002, 0x00001000])
            elements = [(t, rng.choice(BAD_UIDS)) if t == tag else (t, v) for t, v in elements]
        elif kind == "group_length":
            fix = False
            elements = [
                (t, struct.pack("<L", rng.choice(LENGTHS))) if t == 0 else (t, v)
                for t, v in elements
            ]
    command = _command_bytes(elements, fix_group_length=fix)
    if "length" in kinds:
        command = _with_element_length(rng, command)
    if "truncate" in kinds:
        command = command[: rng.randrange(0, max(1, len(command)))]
    control = rng.choice([0x00, 0x01, 0x02, 0x03]) if "control" in kinds else 0x03
    context_id = rng.choice([2, 255, 0, 3, 9]) if "context" in kinds else None
    split = rng.choice([1, 2, 7, 64]) if "split" in kinds else 0
    follow = dataset if is_store else None
    return CommandInput(command, follow, context_id, control, split, tuple(kinds))


# -- files for the worker's decoder ------------------------------------------------------
def part10(base: BaseDataset, data: bytes, uid: str) -> bytes:
    """A Part 10 file of a (mutated) data set, as the listener spools it."""
    from listener.fastpath.part10 import file_preamble

    return file_preamble(CTImageStorage, uid, base.syntax, "FUZZER") + data
