"""What the result documents are made from: a frozen record, built once, read by every builder.

Why one record: the SR, the key images and the KOS must tell the same story (same UIDs,
same probabilities, same bundle). The worker or the delivery fills a :class:`ReportInput`
from the stored prediction and the source headers; the builders never touch the database,
the network or the model, so the same input always gives the same documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage

from db.vocabulary import Priority
from training.classes import DISCLAIMER_SYNTHETIC
from triage.uids import require_uid

if TYPE_CHECKING:
    from db.models import Prediction


@dataclass(frozen=True)
class DocumentRef:
    """An earlier SR of the same study (its Predecessor Documents Sequence entry)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str = str(Comprehensive3DSRStorage)

    def as_dataset(self) -> Dataset:
        """The four attributes highdicom reads to reference this document."""
        ds = Dataset()
        ds.StudyInstanceUID = self.study_instance_uid
        ds.SeriesInstanceUID = self.series_instance_uid
        ds.SOPInstanceUID = self.sop_instance_uid
        ds.SOPClassUID = self.sop_class_uid
        return ds


@dataclass(frozen=True)
class KeyImage:
    """One rendered key slice: RGB pixels, and the source slice and class it shows."""

    pixels: np.ndarray  # (rows, columns, 3) uint8 RGB
    source_sop_instance_uid: str
    class_name: str
    score: float  # the slice's probability of ``class_name``
    annotated: bool = False  # text burned into the pixels
    pixel_spacing_mm: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        pixels = self.pixels
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(
                f"pixels: need (rows, columns, 3) uint8 RGB (got {pixels.dtype} {pixels.shape})"
            )


@dataclass(frozen=True)
class ReportInput:
    """Everything the documents of one prediction say, for one kind of destination.

    ``headers`` are source instances without pixel data: the first gives the patient and
    study modules, one must come from ``series_instance_uid`` (the series read), and every
    slice the SR names as a key slice (see :func:`worker.reports.key_slices.key_slice_uids`)
    must be among them. A study that was not assessed has ``assessed`` false and its
    ``reasons``; its probabilities, if any, are not reported.
    """

    headers: tuple[Dataset, ...]
    class_names: tuple[str, ...]
    study_version: int
    bundle_name: str
    bundle_version: str
    bundle_sha256: str
    synthetic_demo: bool
    assessed: bool
    priority: str
    probabilities: Mapping[str, float] = field(default_factory=dict)
    flags: Mapping[str, bool] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    in_domain: bool = True
    domain_score: float | None = None
    reasons: tuple[str, ...] = ()
    slice_scores: tuple[Mapping[str, Any], ...] = ()
    series_instance_uid: str | None = None
    predecessor: DocumentRef | None = None
    key_images: tuple[KeyImage, ...] = ()
    destination_kind: str = "dicom"
    created_at: datetime | None = None  # content date/time; the prediction's creation time
    key_slice_count: int = 3

    def __post_init__(self) -> None:
        if not self.headers:
            raise ValueError("headers: need at least one source instance header")
        studies = {str(ds.get("StudyInstanceUID", "")) for ds in self.headers}
        if len(studies) != 1 or "" in studies:
            raise ValueError(f"headers: must all carry one StudyInstanceUID (got {studies})")
        require_uid(next(iter(studies)), "headers: StudyInstanceUID")  # never copy a bad one
        if not self.class_names:
            raise ValueError("class_names: the bundle's class list must not be empty")
        if self.study_version < 1:
            raise ValueError(f"study_version: must be >= 1 (got {self.study_version})")
        if not self.bundle_sha256.strip():
            raise ValueError("bundle_sha256: must not be blank")
        if self.key_slice_count < 1:
            raise ValueError(f"key_slice_count: must be >= 1 (got {self.key_slice_count})")
        if self.assessed:
            for what, table in (
                ("probabilities", self.probabilities),
                ("flags", self.flags),
                ("thresholds", self.thresholds),
            ):
                missing = [name for name in self.class_names if name not in table]
                if missing:
                    raise ValueError(f"{what}: an assessed result needs every class ({missing})")
        elif not self.reasons:
            raise ValueError("reasons: a study not assessed must say why")
        if self.series_instance_uid is not None and not any(
            str(ds.get("SeriesInstanceUID", "")) == self.series_instance_uid for ds in self.headers
        ):
            raise ValueError("headers: none comes from series_instance_uid (the series read)")

    @property
    def study_instance_uid(self) -> str:
        return str(self.headers[0].StudyInstanceUID)

    @property
    def demo_label(self) -> str | None:
        """The synthetic-demo label when a phantom-trained bundle made this result."""
        return DISCLAIMER_SYNTHETIC if self.synthetic_demo else None

    def header(self, sop_instance_uid: str) -> Dataset | None:
        """The header of one source instance, if it was given."""
        for ds in self.headers:
            if str(ds.get("SOPInstanceUID", "")) == sop_instance_uid:
                return ds
        return None


def report_input_from_prediction(
    prediction: Prediction,
    *,
    study_instance_uid: str,
    headers: Sequence[Dataset],
    class_names: Iterable[str],
    predecessor: DocumentRef | None = None,
    key_images: Sequence[KeyImage] = (),
    destination_kind: str = "dicom",
    key_slice_count: int = 3,
) -> ReportInput:
    """A :class:`ReportInput` from a stored prediction row (no query is made here).

    Raises
    ------
    ValueError
        If the headers belong to another study than ``study_instance_uid``, or the
        prediction lacks a class an assessed result must report.
    """
    if any(str(ds.get("StudyInstanceUID", "")) != study_instance_uid for ds in headers):
        raise ValueError("headers: every header must belong to study_instance_uid")
    return ReportInput(
        headers=tuple(headers),
        class_names=tuple(class_names),
        study_version=prediction.study_version,
        bundle_name=prediction.bundle_name,
        bundle_version=prediction.bundle_version,
        bundle_sha256=prediction.bundle_sha256,
        synthetic_demo=bool(prediction.synthetic_demo),
        assessed=bool(prediction.assessed),
        priority=str(prediction.priority),
        probabilities={k: float(v) for k, v in prediction.probabilities.items()},
        flags={k: bool(v) for k, v in prediction.flags.items()},
        thresholds={k: float(v) for k, v in prediction.thresholds.items()},
        in_domain=bool(prediction.in_domain),
        domain_score=prediction.domain_score,
        reasons=tuple(str(r) for r in prediction.reasons or ()),
        slice_scores=tuple(prediction.slice_scores or ()),
        series_instance_uid=prediction.series_instance_uid,
        predecessor=predecessor,
        key_images=tuple(key_images),
        destination_kind=destination_kind,
        created_at=prediction.created_at,
        key_slice_count=key_slice_count,
    )


def not_assessed_input(
    *,
    headers: Sequence[Dataset],
    class_names: Iterable[str],
    study_version: int,
    bundle_name: str,
    bundle_version: str,
    bundle_sha256: str,
    synthetic_demo: bool,
    reasons: Sequence[str],
    destination_kind: str = "dicom",
    predecessor: DocumentRef | None = None,
    created_at: datetime | None = None,
) -> ReportInput:
    """A :class:`ReportInput` for a study that failed before any prediction was stored.

    An undecodable study or one with no eligible series ends ``failed`` without a
    prediction row; it still gets an SR that says it was not assessed and why.
    """
    return ReportInput(
        headers=tuple(headers),
        class_names=tuple(class_names),
        study_version=study_version,
        bundle_name=bundle_name,
        bundle_version=bundle_version,
        bundle_sha256=bundle_sha256,
        synthetic_demo=synthetic_demo,
        assessed=False,
        priority=str(Priority.NOT_ASSESSED),
        reasons=tuple(reasons),
        destination_kind=destination_kind,
        predecessor=predecessor,
        created_at=created_at,
    )
