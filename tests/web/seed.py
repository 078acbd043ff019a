"""Studies, results and deliveries written straight into a test database (no model run):
the web app only reads them, so each test states exactly the rows it needs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from db.models import Delivery, Prediction, Series, Study, utcnow
from db.vocabulary import DeliveryState, Priority, StudyState

CLASSES = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid",
           "subdural", "ischemic")  # fmt: skip


def add_study(
    session: Session,
    *,
    received: datetime | None = None,
    priority: Priority | None = Priority.ROUTINE,
    probabilities: dict[str, float] | None = None,
    assessed: bool = True,
    in_domain: bool = True,
    reasons: list[str] | None = None,
    synthetic_demo: bool = True,
    calling_aet: str = "CT1",
    accession: str | None = None,
    bundle_version: str = "0.1.0-synthetic",
    delivered_after_s: float | None = None,
    shadow_priority: Priority | None = None,
) -> Study:
    """A study received at ``received`` and, unless ``priority`` is None, its result."""
    received = received or utcnow()
    state = StudyState.RECEIVING if priority is None else StudyState.PREDICTED
    study = Study(
        study_instance_uid=generate_uid(),
        state=state,
        version=1,
        calling_aet=calling_aet,
        modality="CT",
        study_description="CT HEAD",
        accession_number=accession or f"ACC{generate_uid()[-6:]}",
        first_received_at=received - timedelta(seconds=30),
        last_received_at=received,
    )
    session.add(study)
    session.flush()
    series = Series(
        study_id=study.id, series_instance_uid=generate_uid(), modality="CT", series_number=2
    )
    session.add(series)
    session.flush()
    if priority is None:
        return study
    probs = probabilities or dict.fromkeys(CLASSES, 0.05)
    flags = {k: assessed and v >= 0.5 for k, v in probs.items()}
    prediction = _prediction(
        study, series, priority, probs, flags, assessed, in_domain, reasons or [],
        synthetic_demo, bundle_version, received, shadow=False,
    )  # fmt: skip
    session.add(prediction)
    if shadow_priority is not None:
        session.add(
            _prediction(
                study, series, shadow_priority, probs, flags, assessed, in_domain, [],
                synthetic_demo, "0.2.0-shadow", received, shadow=True,
            )
        )  # fmt: skip
    session.flush()
    if delivered_after_s is not None:
        session.add(
            Delivery(
                prediction_id=prediction.id,
                channel="sr",
                destination="PACS@127.0.0.1:104",
                state=DeliveryState.SENT,
                attempts=2,
                acknowledged_at=received + timedelta(seconds=delivered_after_s),
            )
        )
        study.state = StudyState.DELIVERED
    session.flush()
    return study


def _prediction(
    study: Study, series: Series, priority: Priority, probs: dict[str, float],
    flags: dict[str, bool], assessed: bool, in_domain: bool, reasons: list[str],
    synthetic_demo: bool, bundle_version: str, received: datetime, *, shadow: bool,
) -> Prediction:  # fmt: skip
    slices: list[dict[str, Any]] = [
        {"index": i, "sop_instance_uid": generate_uid(), "instance_number": i + 1,
         "scores": {k: round(v * (1 - abs(i - 10) / 20), 4) for k, v in probs.items()}}
        for i in range(20)
    ]  # fmt: skip
    return Prediction(
        study_id=study.id,
        study_version=1,
        series_instance_uid=series.series_instance_uid,
        bundle_name="pacs-triage-demo" if not shadow else "candidate",
        bundle_version=bundle_version,
        bundle_sha256=("ab" if not shadow else "cd") * 32,
        synthetic_demo=synthetic_demo,
        shadow=shadow,
        probabilities=probs,
        flags=flags,
        thresholds=dict.fromkeys(probs, 0.5),
        priority=priority,
        slice_scores=slices,
        timings={"inference_s": 0.4, "total_s": 1.2},
        assessed=assessed,
        in_domain=in_domain,
        domain_score=0.9,
        reasons=reasons,
        created_at=received + timedelta(seconds=3),
    )
