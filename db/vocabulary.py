"""Closed vocabularies shared by every service: study states, job states, audit events.

One home for each word so the listener, worker, CLI and auditors all speak alike.
"""

from __future__ import annotations

from enum import StrEnum


class StudyState(StrEnum):
    """Where a study is on its way from the scanner to a delivered result."""

    RECEIVING = "receiving"
    COMPLETE = "complete"
    QUEUED = "queued"
    PROCESSING = "processing"
    PREDICTED = "predicted"
    DELIVERED = "delivered"
    FAILED = "failed"
    IGNORED = "ignored"


class JobState(StrEnum):
    """State of one inference job (one study version run through one bundle)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class AuditEventType(StrEnum):
    """Every event the audit log can hold; tests assert on these."""

    ASSOCIATION_REJECTED = "association_rejected"
    INSTANCE_RECEIVED = "instance_received"
    INSTANCE_DUPLICATE = "instance_duplicate"
    INSTANCE_QUARANTINED = "instance_quarantined"
    INSTANCE_RECOVERED = "instance_recovered"
    STUDY_COMPLETED = "study_completed"
    STUDY_UPDATED = "study_updated"
    STUDY_IGNORED = "study_ignored"
    STUDY_RESUMED = "study_resumed"
    STUDY_QUEUED = "study_queued"
    STUDY_REQUEUED = "study_requeued"
    INFERENCE_STARTED = "inference_started"
    PREDICTION_STORED = "prediction_stored"
    INFERENCE_FAILED = "inference_failed"
    RESULT_DELIVERED = "result_delivered"
    DELIVERY_FAILED = "delivery_failed"
    RESULT_VIEWED = "result_viewed"
