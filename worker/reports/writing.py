"""Write result documents as DICOM Part 10 files, atomically, named by SOP Instance UID.

Same discipline as the listener's spool: write a temporary file, fsync it, rename it into
place, fsync the folder; a crash leaves the whole file or nothing under its final name.
The UID is validated before it becomes a file name (:func:`triage.uids.require_uid`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset

from triage.uids import require_uid
from worker.reports.documents import ResultDocuments


def part10_bytes(ds: Dataset) -> bytes:
    """``ds`` encoded as a Part 10 file (preamble, meta header, data set)."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_dataset(ds: Dataset, folder: Path) -> Path:
    """Write one data set to ``folder/<SOP Instance UID>.dcm`` atomically.

    Raises
    ------
    triage.uids.InvalidUIDError
        If the SOP Instance UID is not a valid UID (it never reaches a path).
    """
    uid = require_uid(str(ds.get("SOPInstanceUID", "")), "SOP Instance UID")
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{uid}.dcm"
    data = part10_bytes(ds)
    fd, temp = tempfile.mkstemp(prefix=".", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return final


def write_documents(docs: ResultDocuments | Iterable[Dataset], folder: Path) -> list[Path]:
    """Write every document (SR, key images, KOS) into ``folder``; paths in send order."""
    datasets = [ds for _, ds in docs.items()] if isinstance(docs, ResultDocuments) else docs
    return [write_dataset(ds, Path(folder)) for ds in datasets]
