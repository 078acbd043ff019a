"""Records shared by the dataset readers, the slice cache and the trainers.

Why: the image stage trains on slices, the patient stage on ordered series, and evaluation on
studies; one set of records with explicit study, series and patient keys serves all three and
makes the patient-wise split checkable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SliceRecord:
    """One image: where it is, which study/series/patient it belongs to, what is known of it.

    ``labels`` holds only the known labels; a class absent from it is unknown, not negative.
    """

    path: Path
    image_id: str
    study_uid: str
    series_uid: str
    patient_id: str
    position: float = 0.0
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesRecord:
    """An ordered series (the patient stage's sequence); slices sorted along the patient axis."""

    study_uid: str
    series_uid: str
    patient_id: str
    slices: tuple[SliceRecord, ...]


def label_matrix(records: Sequence[SliceRecord], class_names: Sequence[str]) -> np.ndarray:
    """``(N, C)`` float32 labels with NaN where a label is unknown."""
    out = np.full((len(records), len(class_names)), np.nan, dtype=np.float32)
    for i, rec in enumerate(records):
        for j, name in enumerate(class_names):
            if name in rec.labels:
                out[i, j] = rec.labels[name]
    return out


def pooled_labels(slice_labels: np.ndarray) -> np.ndarray:
    """Study/series labels from slice labels: positive if any slice is, negative only if all
    slices are known negatives, unknown otherwise. ``(N, C)`` -> ``(C,)`` with NaN."""
    out = np.full(slice_labels.shape[1], np.nan, dtype=np.float32)
    for j in range(slice_labels.shape[1]):
        column = slice_labels[:, j]
        if np.any(column == 1):
            out[j] = 1.0
        elif column.size and not np.isnan(column).any():
            out[j] = 0.0
    return out


@dataclass
class LabelledDataset:
    """Slices grouped into ordered series, with the class names they are labelled for.

    Attributes
    ----------
    series
        Ordered series; every slice belongs to exactly one.
    class_names
        Output classes, in model column order.
    kind
        ``"ct"`` (DICOM in HU) or ``"image"`` (PNG/JPG pictures).
    source
        Short description for the bundle's training-data summary.
    """

    series: list[SeriesRecord]
    class_names: tuple[str, ...]
    kind: str = "ct"
    source: str = ""
    missing_files: tuple[str, ...] = ()
    """Label rows (image ids) whose file was not found; reported, never silently dropped."""

    @property
    def slices(self) -> list[SliceRecord]:
        return [s for series in self.series for s in series.slices]

    def subset(self, keep: Iterable[str]) -> LabelledDataset:
        """Only the series whose ``series_uid`` is in ``keep``."""
        wanted = set(keep)
        return LabelledDataset(
            [s for s in self.series if s.series_uid in wanted],
            self.class_names,
            self.kind,
            self.source,
            self.missing_files,
        )

    def series_labels(self) -> np.ndarray:
        """``(S, C)`` pooled labels per series (NaN unknown)."""
        return (
            np.stack([pooled_labels(label_matrix(s.slices, self.class_names)) for s in self.series])
            if self.series
            else np.zeros((0, len(self.class_names)), dtype=np.float32)
        )

    def summary(self) -> dict[str, object]:
        """Counts for reports and the bundle: patients, studies, series, slices, positives."""
        slice_labels = label_matrix(self.slices, self.class_names)
        series_labels = self.series_labels()
        return {
            "source": self.source,
            "kind": self.kind,
            "patients": len({s.patient_id for s in self.series}),
            "studies": len({s.study_uid for s in self.series}),
            "series": len(self.series),
            "slices": len(slice_labels),
            "positive_slices": _count(slice_labels, self.class_names),
            "positive_series": _count(series_labels, self.class_names),
            "missing_files": len(self.missing_files),
        }


def _count(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    return {
        name: int(np.nansum(labels[:, j])) if labels.size else 0
        for j, name in enumerate(class_names)
    }


def finite_or_none(value: float) -> float | None:
    """JSON-friendly float: NaN and infinities become None."""
    return None if value is None or not math.isfinite(value) else float(value)
