"""Read the chosen series from the spool and decode it (every accepted transfer syntax).

Decoding is done with pydicom's pixel-data plugins (pylibjpeg for JPEG, JPEG-LS, JPEG 2000
and RLE), in a thread pool: the decoders release the GIL, so two cores decode two slices.

The worker reads with :func:`load_series`, which drops a slice it cannot decode and says
which and why instead of giving up on the study: one truncated Pixel Data element or one
broken codestream among hundreds of good slices must not cost the patient a triage result.
Whether what remains is still enough to judge is a policy of
:mod:`worker.series_selection`, not of this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless


class StudyDataError(ValueError):
    """The study's files cannot be read or decoded; retrying will not help."""


# Measured here on 512x512 16-bit CT: CharLS through pyjpegls decodes JPEG-LS in 5.6 ms a
# slice, pylibjpeg-libjpeg (pydicom's first choice) in 17 ms; others keep pydicom's order.
PREFERRED_DECODER = {JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls"}

MAX_DECODED_BYTES = 512 * 1024 * 1024
"""Largest decoded pixel data of one instance (Rows x Columns x Samples x Bits Allocated / 8 x
Frames) the worker will allocate. A head CT slice is 0.5 MiB; a compressed file declaring a
65535 x 65535 frame is a decompression bomb of 8 GiB from a 1 KiB file (found by
``bench/fuzz``): refused from its header, before the decoder allocates, so one hostile slice
cannot get the worker killed for memory and its study redelivered again and again."""

# Decoder messages can run to paragraphs (pylibjpeg quotes the codestream state); the
# reason is stored per dropped slice in JSON and the audit log, so it is kept short.
MAX_REASON_CHARS = 160


@dataclass(frozen=True)
class DroppedSlice:
    """A slice left out of the volume: its SOP Instance UID and a short reason."""

    sop_instance_uid: str
    reason: str


@dataclass(frozen=True)
class LoadedSeries:
    """The decoded slices (in no particular order) and the slices that had to be dropped."""

    datasets: list[Dataset]
    dropped: list[DroppedSlice]


def _declared_pixel_bytes(ds: Dataset) -> int:
    """What decoding ``ds`` would allocate, from its header alone."""
    frames = ds.get("NumberOfFrames") or 1
    try:
        frames = max(1, int(frames))
    except (TypeError, ValueError):
        frames = 1
    values = (ds.get(k) or 0 for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated"))
    rows, columns, samples, bits = (int(v) if isinstance(v, int) else 0 for v in values)
    return rows * columns * max(1, samples) * max(1, bits) // 8 * frames


def _read(path: Path) -> Dataset:
    try:
        ds = dcmread(path)
        declared = _declared_pixel_bytes(ds)
        if declared > MAX_DECODED_BYTES:
            raise MemoryError(
                f"declared pixel data of {declared} bytes exceeds {MAX_DECODED_BYTES} (not decoded)"
            )
        plugin = PREFERRED_DECODER.get(ds.file_meta.get("TransferSyntaxUID"))
        if plugin is not None:
            ds.pixel_array_options(decoding_plugin=plugin)
        ds.pixel_array  # decode now, in the pool, so errors surface here  # noqa: B018
    except FileNotFoundError as exc:
        raise StudyDataError(f"spooled file missing: {path.name}") from exc
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        # BaseException, not Exception: pylibjpeg-rle is Rust, and a Rust panic on a broken
        # RLE segment reaches Python as pyo3's PanicException, a BaseException (found by
        # bench/fuzz; tests/data/fuzz/rle_*). It is one bad slice, not a worker failure.
        raise StudyDataError(f"cannot decode {path.name}: {type(exc).__name__}: {exc}") from exc
    return ds


def _read_or_why(path: Path) -> Dataset | str:
    """The decoded dataset, or a short reason it could not be had (never raises)."""
    try:
        return _read(path)
    except StudyDataError as exc:
        cause = exc.__cause__
        if isinstance(cause, FileNotFoundError):
            return "spooled file missing"
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return " ".join(why.split())[:MAX_REASON_CHARS]


def read_series(paths: Sequence[Path], *, threads: int = 2) -> list[Dataset]:
    """Read and decode every file; raise :class:`StudyDataError` on the first bad one.

    Strict on purpose, for benchmarks over known-good corpora; the worker uses
    :func:`load_series`.
    """
    if not paths:
        raise StudyDataError("series has no instances")
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(_read, paths))


def load_series(files: Mapping[str, Path], *, threads: int = 2) -> LoadedSeries:
    """Read and decode every file of a series, dropping (and naming) those that fail.

    Parameters
    ----------
    files
        SOP Instance UID -> spooled file, as recorded when the instance was received. The
        UID comes from the database, not the file, so a slice is named even when its file
        is too broken to parse.
    threads
        Decoder threads.

    Raises
    ------
    StudyDataError
        When ``files`` is empty; a series with slices never raises, however many are bad.
    """
    if not files:
        raise StudyDataError("series has no instances")
    uids = sorted(files)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        outcomes = list(pool.map(_read_or_why, (files[uid] for uid in uids)))
    datasets: list[Dataset] = []
    dropped: list[DroppedSlice] = []
    for uid, outcome in zip(uids, outcomes, strict=True):
        if isinstance(outcome, str):
            dropped.append(DroppedSlice(uid, outcome))
        else:
            datasets.append(outcome)
    return LoadedSeries(datasets, dropped)
