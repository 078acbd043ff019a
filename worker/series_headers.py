"""Read what series selection needs but the database does not hold, from one spooled file.

Why here and not in the listener: ImageType, ConvolutionKernel and SliceThickness are only
needed once a study is complete, by the worker, and one header per series (read without
pixel data) costs a millisecond; the listener's receive path stays as lean as it is.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from worker.series_selection import SeriesHeader

HEADER_TAGS = ["ImageType", "ConvolutionKernel", "SliceThickness"]


def _text_values(value: object) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(str(v) for v in value)  # type: ignore[attr-defined]
    except TypeError:
        return (str(value),)


def read_series_header(path: Path) -> SeriesHeader:
    """The series facts in ``path``'s header; empty facts when the file cannot be read.

    An unreadable header must not refuse the series here: decoding reports the file.
    """
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
    except (OSError, InvalidDicomError, ValueError):
        return SeriesHeader()
    kernels = _text_values(ds.get("ConvolutionKernel"))
    try:
        thickness = float(ds.SliceThickness) if ds.get("SliceThickness") not in (None, "") else None
    except (TypeError, ValueError):
        thickness = None
    return SeriesHeader(
        tuple(v.strip().upper() for v in _text_values(ds.get("ImageType"))),
        kernels[0] if kernels else None,
        thickness,
    )
