"""Response and request shapes of the JSON API: the OpenAPI description is built from these.

Every result carries ``label``: the triage-aid notice with the model name, version and
weights hash, and the demo label when the synthetic demo bundle made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from db.vocabulary import DeliveryState, Priority, StudyState, WebRole

TRIAGE_AID = "Triage aid, not a diagnosis"
DEMO_LABEL = "synthetic demo — not for clinical use"


def result_label(name: str, version: str, sha256: str, synthetic_demo: bool) -> str:
    """The notice every displayed result carries (what made it, and that it is an aid)."""
    label = f"{TRIAGE_AID}: model {name} {version}, weights sha256 {sha256}"
    return f"{label}; {DEMO_LABEL}" if synthetic_demo else label


def label_of(row: Mapping[str, Any]) -> str:
    """:func:`result_label` of a row holding the bundle columns of a prediction."""
    return result_label(
        row["bundle_name"], row["bundle_version"], row["bundle_sha256"], row["synthetic_demo"]
    )


class BundleRef(BaseModel):
    """Which model bundle made a result: the exact weights, and whether it is the demo."""

    bundle_name: str
    bundle_version: str
    bundle_sha256: str
    synthetic_demo: bool


class ResultSummary(BundleRef):
    """A study's deployed result as the worklist shows it."""

    priority: Priority
    probabilities: dict[str, float]
    flags: dict[str, bool]
    assessed: bool
    in_domain: bool
    reasons: list[str]
    predicted_at: datetime
    study_version: int
    stale: bool = Field(description="The study received images after this result was made.")
    label: str


class StudyBase(BaseModel):
    """What identifies a study to its reader, its state and who acknowledged it."""

    id: int
    study_instance_uid: str
    accession_number: str | None
    study_description: str | None
    calling_aet: str | None
    modality: str | None
    state: StudyState
    version: int
    first_received_at: datetime
    last_received_at: datetime
    acknowledged_by: list[str]


class StudyListItem(StudyBase):
    """One worklist row."""

    delivered: bool
    result: ResultSummary | None


class StudyPage(BaseModel):
    """A page of studies, most pressing first, with the total that matched."""

    notice: str = TRIAGE_AID
    total: int
    limit: int
    offset: int
    items: list[StudyListItem]


class SliceScore(BaseModel):
    """Per-slice scores of one slice, in patient-axis order."""

    index: int
    sop_instance_uid: str
    instance_number: int | None = None
    scores: dict[str, float]


class ResultDetail(BundleRef):
    """A result in full: probabilities, thresholds, the slice curve, timings, the domain check."""

    id: int
    study_version: int
    series_instance_uid: str | None
    shadow: bool
    priority: Priority
    probabilities: dict[str, float]
    flags: dict[str, bool]
    thresholds: dict[str, float]
    slice_scores: list[SliceScore]
    timings: dict[str, Any]
    assessed: bool
    in_domain: bool
    domain_score: float | None
    reasons: list[str]
    created_at: datetime
    label: str


class SeriesOut(BaseModel):
    """A series of the study, and whether it is the one the model read."""

    series_instance_uid: str
    series_number: int | None
    series_description: str | None
    modality: str | None
    instances: int
    read: bool


class DeliveryOut(BaseModel):
    """One delivery of the result and its attempts."""

    channel: str
    destination: str
    state: DeliveryState
    attempts: int
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class Timings(BaseModel):
    """Seconds from the last image to the result and to the first delivery."""

    last_image_to_result_s: float | None
    last_image_to_delivered_s: float | None


class StudyDetail(StudyBase):
    """One study: results (deployed and shadow), series, deliveries, timings."""

    state_reason: str | None
    completed_at: datetime | None
    result: ResultDetail | None
    shadow_results: list[ResultDetail]
    series: list[SeriesOut]
    deliveries: list[DeliveryOut]
    timings: Timings
    notice: str = TRIAGE_AID


class Acknowledged(BaseModel):
    """The answer to an acknowledgement."""

    study_id: int
    study_version: int
    acknowledged_by: str
    new: bool


class BundleSeen(BundleRef):
    """A model bundle that made stored results."""

    shadow: bool
    predictions: int
    first_seen: datetime
    last_seen: datetime
    label: str


class AuditEventOut(BaseModel):
    """One audit row."""

    id: int
    at: datetime
    event_type: str
    actor: str
    study_instance_uid: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """Audit rows oldest first; ask again with ``after_id=next_after_id`` for more."""

    items: list[AuditEventOut]
    next_after_id: int | None


class Check(BaseModel):
    """One readiness check."""

    ok: bool
    detail: str


class Readiness(BaseModel):
    """Whether the app can serve: database, broker and spool disk space."""

    ready: bool
    checks: dict[str, Check]


class Me(BaseModel):
    """Who the credentials belong to."""

    name: str
    role: WebRole
