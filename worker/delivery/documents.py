"""Build a result's documents (SR, key images, KOS) and spool them before the prediction commits.

The inference worker calls this with the model and the slices still in hand (Grad-CAM key
images need both). The folder is written whole or not at all (temporary folder, fsync,
rename), and its UIDs are deterministic (``worker.reports.result_uids``), so the rebuild
after a crash before the commit writes the same documents under the same UIDs, and the
outbox rows committed with the prediction always point at a complete folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset

from db.models import Prediction
from training.classes import DISCLAIMER_SYNTHETIC
from triage.result_store import result_folder
from worker.reports import (
    DocumentRef,
    ResultDocuments,
    build_result_documents,
    key_slice_uids,
    report_input_from_prediction,
    write_documents,
)

log = logging.getLogger(__name__)
DESTINATION_KIND = "dicom"


@dataclass(frozen=True)
class SpooledResult:
    """Where a result's documents lie and their UIDs (stored on each outbox row)."""

    folder: Path
    document_uids: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def _header(ds: Dataset) -> Dataset:
    """``ds`` without its pixels: what the document builders read."""
    copy = Dataset({tag: elem for tag, elem in ds.items() if tag < 0x7FE00000})
    copy.file_meta = ds.file_meta if hasattr(ds, "file_meta") else FileMetaDataset()
    return copy


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def spool_documents(docs: ResultDocuments, folder: Path) -> None:
    """Write ``docs`` into ``folder`` atomically; an existing complete folder is kept.

    Each file is written and fsynced by :func:`worker.reports.write_documents`; the folder
    is renamed into place whole, so an existing one is complete, and deterministic UIDs
    make it the same documents: keeping it makes the rebuild after a crash a no-op.
    """
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    write_documents(docs, temporary)
    try:
        os.rename(temporary, folder)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        if not folder.is_dir():
            raise
    _fsync_dir(folder.parent)


def document_uids(docs: ResultDocuments) -> dict[str, Any]:
    """The UIDs every channel names: SR (and its series), key images, KOS."""
    uids: dict[str, Any] = {
        "sr": str(docs.sr.SOPInstanceUID),
        "sr_series": docs.uids.sr_series,
        "key_images": [str(ds.SOPInstanceUID) for ds in docs.key_images],
    }
    if docs.kos is not None:
        uids["kos"] = str(docs.kos.SOPInstanceUID)
    return uids


def _key_images(
    prediction: Prediction, bundle: Any, volume: Any, names: list[str], count: int
) -> list[Any]:
    """Grad-CAM key images of the top slices (torch is imported only here)."""
    from worker.reports.key_images import render_key_images

    return render_key_images(
        bundle,
        volume,
        prediction.slice_scores,
        names,
        count,
        flags=prediction.flags,
        probabilities=prediction.probabilities,
        demo_label=DISCLAIMER_SYNTHETIC if prediction.synthetic_demo else None,
    )


def build_and_spool(
    prediction: Prediction,
    *,
    study_uid: str,
    datasets: Sequence[Dataset],
    volume: Any,
    bundle: Any,
    spool: Path,
    key_images: bool,
    key_image_count: int,
    earlier: dict[str, Any],
) -> SpooledResult:
    """Build the documents of ``prediction`` (not yet committed) and spool them.

    ``datasets`` are the slices the model read, or for a study that failed before that one
    readable header (its SR says not assessed and why, with no key images). ``volume`` is
    the model input in ``prediction.slice_scores`` order (None: no key images). ``earlier``
    is the previous version's document UIDs, named as the SR's predecessor.
    """
    started = time.perf_counter()
    names = list(bundle.class_names)
    chosen = (
        set(
            key_slice_uids(
                prediction.slice_scores or [],
                names,
                prediction.flags,
                prediction.probabilities,
                key_image_count,
            )
        )
        if prediction.assessed
        else set()
    )
    headers = [_header(ds) for ds in datasets[:1]]
    headers += [_header(ds) for ds in datasets[1:] if str(ds.SOPInstanceUID) in chosen]
    predecessor = (
        DocumentRef(study_uid, earlier["sr_series"], earlier["sr"])
        if earlier.get("sr") and earlier.get("sr_series")
        else None
    )
    rendered_at = time.perf_counter()
    wanted = key_images and prediction.assessed and volume is not None
    images = _key_images(prediction, bundle, volume, names, key_image_count) if wanted else []
    built_at = time.perf_counter()
    report = report_input_from_prediction(
        prediction,
        study_instance_uid=study_uid,
        headers=headers,
        class_names=names,
        predecessor=predecessor,
        key_images=images,
        destination_kind=DESTINATION_KIND,
        key_slice_count=key_image_count,
    )
    docs = build_result_documents(report, key_images=key_images)
    written_at = time.perf_counter()
    folder = result_folder(spool, study_uid, prediction.study_version, prediction.bundle_sha256)
    spool_documents(docs, folder)
    done = time.perf_counter()
    timings = {
        "headers_s": round(rendered_at - started, 4),
        "grad_cam_s": round(built_at - rendered_at, 4),
        "build_s": round(written_at - built_at, 4),
        "spool_s": round(done - written_at, 4),
    }
    log.info("result documents for v%d spooled: %s", prediction.study_version, timings)
    return SpooledResult(folder, document_uids(docs), timings)
