"""The inference worker's side of delivery: which destinations a result goes to, and its rows.

Called from ``worker.tasks``: :func:`prepare` builds and spools the documents before the
prediction's transaction, :func:`enqueue_result` adds the outbox rows inside it. With no
destination configured both do nothing, so a site without delivery pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from db import outbox
from db.models import Prediction, Study
from db.vocabulary import Priority
from triage.destinations import Channel
from triage.settings import Settings
from worker.delivery.documents import SpooledResult, build_and_spool
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def targets(settings: Settings) -> list[outbox.Target]:
    """One target per configured destination, channel by channel."""
    cfg = settings.delivery
    return [
        *(outbox.Target(Channel.DICOM, key) for key in cfg.dicom_destinations),
        *(outbox.Target(Channel.HL7, key) for key in cfg.hl7_destinations),
        *(outbox.Target(Channel.WEBHOOK, key) for key in cfg.webhook_urls),
        *(outbox.Target(Channel.UPS, key) for key in cfg.ups_destinations),
    ]


def not_assessed_prediction(
    *, study_id: int, version: int, job_id: int | None, bundle: Any, reason: str
) -> Prediction:
    """The prediction row of a study the worker could not judge: delivered, never silent."""
    return Prediction(
        study_id=study_id,
        job_id=job_id,
        study_version=version,
        series_instance_uid=None,
        bundle_name=bundle.name,
        bundle_version=bundle.version,
        bundle_sha256=bundle.sha256,
        synthetic_demo=bundle.synthetic_demo,
        shadow=False,
        probabilities={},
        flags={},
        thresholds={},
        priority=Priority.NOT_ASSESSED,
        slice_scores=[],
        timings={},
        assessed=False,
        in_domain=False,
        domain_score=None,
        reasons=[reason[:2000]],
    )


def first_header(paths: Sequence[Path]) -> list[Dataset]:
    """One readable header of the study (for a result made without decoded slices)."""
    for path in sorted(paths):
        try:
            return [dcmread(path, stop_before_pixels=True)]
        except Exception:  # an unreadable file is why the study failed; try the next
            continue
    return []


def prepare_quietly(
    runtime: WorkerRuntime,
    prediction: Prediction,
    study_id: int,
    datasets: Sequence[Dataset],
    bundle: Any,
    volume: Any = None,
) -> SpooledResult | None:
    """Build and spool the documents of ``prediction`` when any destination is configured.

    A failure to build is logged, never raised: it must not lose the result itself. The
    rows are queued anyway; a DICOM row without documents goes dead with the reason
    (visible in the audit), while HL7, webhook and UPS still carry the result.
    """
    settings = runtime.settings
    if not settings.delivery.any or prediction.shadow:
        return None
    try:
        with runtime.sessions() as session:
            study = session.get(Study, study_id)
            assert study is not None
            study_uid = study.study_instance_uid
            earlier = outbox.earlier_documents(session, study_id, prediction.study_version)
        return build_and_spool(
            prediction,
            study_uid=study_uid,
            datasets=datasets,
            volume=volume,
            bundle=bundle,
            spool=settings.spool.dir,
            key_images=settings.delivery.key_images,
            key_image_count=settings.delivery.key_image_count,
            earlier=earlier,
        )
    except Exception:
        log.exception("study %d: result documents could not be built", study_id)
        return None


def enqueue_result(
    session: Session, settings: Settings, prediction: Prediction, spooled: SpooledResult | None
) -> list[int]:
    """Add the outbox rows of ``prediction`` in the caller's transaction; their ids.

    ``spooled`` None with destinations configured means the documents could not be built:
    the rows are queued anyway (HL7, webhook and UPS carry the result; a DICOM row without
    documents goes dead with the reason, visible in the audit).
    """
    if not settings.delivery.any or prediction.shadow:
        return []
    rows = outbox.enqueue(
        session,
        prediction,
        targets(settings),
        result_dir=str(spooled.folder) if spooled is not None else None,
        document_uids=dict(spooled.document_uids) if spooled is not None else {},
    )
    session.flush()
    return [row.id for row in rows]
