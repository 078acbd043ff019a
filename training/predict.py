"""``training predict``: probabilities for DICOM files, PNG/JPG pictures or study folders.

Why it groups: a DICOM slice means most inside its series, so DICOM inputs (files or folders,
any depth) are grouped by StudyInstanceUID/SeriesInstanceUID, ordered along the patient axis
and scored as sequences, exactly like the worker does. Pictures are scored one by one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from training.bundle import Bundle
from training.preprocessing import PICTURE_SUFFIXES, image_file_to_tensor, preprocess_datasets

logger = logging.getLogger(__name__)


def _expand(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return out


def predict_paths(bundle: Bundle, paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Score every input; one result per DICOM series and per picture.

    Returns
    -------
    list[dict]
        DICOM: ``study_uid``, ``series_uid``, ``study_probabilities``, ``flags`` (classes at or
        above the bundle threshold) and ``slices`` (file, SOP UID, probabilities) in patient-axis
        order. Pictures: ``file`` and ``probabilities``.
    """
    series: dict[tuple[str, str], list[pydicom.Dataset]] = defaultdict(list)
    pictures: list[Path] = []
    for path in _expand(paths):
        if path.suffix.lower() in PICTURE_SUFFIXES:
            pictures.append(path)
            continue
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError):
            logger.warning("%s: neither a picture nor DICOM; skipped", path)
            continue
        key = (str(ds.get("StudyInstanceUID", path)), str(ds.get("SeriesInstanceUID", path)))
        series[key].append(ds)
    results: list[dict[str, Any]] = []
    for (study_uid, series_uid), datasets in series.items():
        x, order = preprocess_datasets(datasets, bundle.preprocess)
        pred = bundle.predict_volume(x)
        results.append(
            {
                "study_uid": study_uid,
                "series_uid": series_uid,
                "study_probabilities": pred.study_probabilities,
                "flags": [
                    n for n, p in pred.study_probabilities.items() if p >= bundle.thresholds[n]
                ],
                "slices": [
                    {
                        "file": str(datasets[i].filename),
                        "sop_uid": str(datasets[i].SOPInstanceUID),
                        "probabilities": probs,
                    }
                    for i, probs in zip(order, pred.slice_probabilities, strict=True)
                ],
            }
        )
    for path in pictures:
        pred = bundle.predict_volume(image_file_to_tensor(path, bundle.preprocess))
        results.append({"file": str(path), "probabilities": pred.slice_probabilities[0]})
    return results
