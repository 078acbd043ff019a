"""Evaluate a bundle on any RSNA-format set, exactly as the worker would run it.

Why through the bundle: the numbers must describe what is deployed, so each series is read
from DICOM, preprocessed with the bundle's own spec and scored with ``predict_volume``. A study
is positive for a class when any of its slices is; its probability is the maximum over its
series.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from tqdm import tqdm

import training
from training.aggregate import studies_from_series
from training.bundle import Bundle
from training.datasets.records import LabelledDataset, label_matrix
from training.metrics import level_report
from training.preprocessing import (
    PICTURE_SUFFIXES,
    hu_volume,
    image_file_to_tensor,
    volume_to_tensor,
)
from training.slice_cache import BadFile

logger = logging.getLogger(__name__)


def default_bundle_path() -> Path:
    """``TRIAGE_MODEL_BUNDLE`` when set, else the shipped demo bundle."""
    env = os.environ.get("TRIAGE_MODEL_BUNDLE")
    if env:
        return Path(env)
    return Path(training.__file__).resolve().parent.parent / "worker" / "bundles" / "demo"


def score_dataset(
    bundle: Bundle,
    dataset: LabelledDataset,
    batch_size: int = 32,
    skipped: list[BadFile] | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Study probabilities per series ``(S, C)`` and slice probabilities per series.

    With ``skipped`` given, a series whose files cannot be decoded is left out (its first
    file and the reason appended there, and logged) instead of ending the evaluation; the
    arrays then hold only the series that were scored, in order.
    """
    names = bundle.class_names
    series_probs, slice_probs = [], []
    for series in tqdm(dataset.series, desc="scoring series", unit="series", leave=False):
        first = series.slices[0].path
        try:
            if len(series.slices) == 1 and first.suffix.lower() in PICTURE_SUFFIXES:
                x = image_file_to_tensor(first, bundle.preprocess)
            else:
                datasets = [pydicom.dcmread(rec.path) for rec in series.slices]
                size = None if bundle.preprocess.crop_to_head else bundle.preprocess.size
                x = volume_to_tensor(hu_volume(datasets, size), bundle.preprocess)
        except Exception as exc:
            if skipped is None:
                raise
            bad = BadFile(first, f"{type(exc).__name__}: {str(exc).strip()[:160]}")
            logger.warning("%s: skipped, cannot be decoded (%s)", bad.path, bad.reason)
            skipped.append(bad)
            continue
        pred = bundle.predict_volume(x, batch_size=batch_size)
        series_probs.append([pred.study_probabilities[n] for n in names])
        slice_probs.append(np.array([[row[n] for n in names] for row in pred.slice_probabilities]))
    return np.asarray(series_probs, dtype=np.float64), slice_probs


def evaluate_bundle(bundle: Bundle, dataset: LabelledDataset) -> dict[str, Any]:
    """Report ``{"study": {...}, "slice": {...}}`` with per-class AUC and weighted log loss.

    Classes of the bundle that the dataset does not label are reported as None. Pictures
    (a class-per-folder set) are scored one by one; their study level is the picture itself.
    """
    names = bundle.class_names
    aligned = LabelledDataset(dataset.series, names, dataset.kind, dataset.source)
    skipped: list[BadFile] = []
    series_probs, slice_probs = score_dataset(bundle, aligned, skipped=skipped)
    if skipped:
        broken = {b.path for b in skipped}
        aligned = aligned.subset(
            s.series_uid for s in aligned.series if s.slices[0].path not in broken
        )
    uids, study_p, study_y = studies_from_series(
        [s.study_uid for s in aligned.series], series_probs, aligned.series_labels()
    )
    slice_y = label_matrix(aligned.slices, names)
    slice_p = np.concatenate(slice_probs)
    slice_thresholds = bundle.config.get("hyperparameters", {}).get("slice_thresholds", {})
    report: dict[str, Any] = {
        "title": f"{bundle.name} {bundle.version} on {dataset.source}",
        "bundle": {
            "name": bundle.name,
            "version": bundle.version,
            "sha256": bundle.sha256,
            "synthetic_demo": bundle.synthetic_demo,
            "disclaimer": bundle.disclaimer,
        },
        "study": level_report(study_y, study_p, names, bundle.thresholds),
        "slice": level_report(slice_y, slice_p, names, slice_thresholds),
    }
    report["study"]["studies"] = len(uids)
    report["skipped_files"] = [{"file": str(b.path), "reason": b.reason} for b in skipped]
    report["_curves"] = {"study": (study_y, study_p), "slice": (slice_y, slice_p)}
    return report
