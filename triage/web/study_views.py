"""db rows -> API shapes for studies and results (shared by the JSON API and the pages)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from triage.web.schemas import (
    DeliveryOut,
    ResultDetail,
    ResultSummary,
    SeriesOut,
    SliceScore,
    StudyDetail,
    StudyListItem,
    Timings,
    label_of,
)


def as_utc(value: datetime | None) -> datetime | None:
    """A naive time from a query string is taken as UTC (every stored time is UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def list_item(row: dict[str, Any]) -> StudyListItem:
    """A worklist row from :func:`db.worklist.list_studies`."""
    result = None
    if row["prediction_id"] is not None:
        result = ResultSummary.model_validate(
            {
                **row,
                "probabilities": row["probabilities"] or {},
                "flags": row["flags"] or {},
                "reasons": list(row["reasons"] or []),
                "study_version": row["prediction_version"],
                "stale": row["prediction_version"] != row["version"],
                "label": label_of(row),
            }
        )
    return StudyListItem.model_validate(
        {**row, "delivered": bool(row["delivered"]), "result": result}
    )


def _result(p: dict[str, Any]) -> ResultDetail:
    return ResultDetail(
        **{k: v for k, v in p.items() if k != "slice_scores"},
        slice_scores=[SliceScore(**s) for s in p["slice_scores"] or []],
        label=label_of(p),
    )


def detail(study: dict[str, Any]) -> StudyDetail:
    """The study view from :func:`db.worklist.study_detail`."""
    result = study["result"]
    last = study["last_received_at"]
    to_result = to_delivered = None
    if result is not None and result["study_version"] == study["version"]:
        to_result = round((result["created_at"] - last).total_seconds(), 3)
        delivered = [
            d["delivered_at"] for d in study["deliveries"] if d["delivered_at"] is not None
        ]
        if delivered:
            to_delivered = round((min(delivered) - last).total_seconds(), 3)
    return StudyDetail(
        **{
            k: v
            for k, v in study.items()
            if k not in ("result", "shadow_results", "series", "deliveries")
        },
        result=_result(result) if result else None,
        shadow_results=[_result(p) for p in study["shadow_results"]],
        series=[SeriesOut(**s) for s in study["series"]],
        deliveries=[DeliveryOut(**d) for d in study["deliveries"]],
        timings=Timings(last_image_to_result_s=to_result, last_image_to_delivered_s=to_delivered),
    )
