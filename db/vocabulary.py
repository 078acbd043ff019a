"""Closed vocabularies shared by every service: states, outcomes, priorities, audit events.

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


class CompletionBasis(StrEnum):
    """Which completeness rule declared a study (or one series) complete.

    Carried by ``listener.completion.Decision`` so callers never read the reason text.
    """

    IDLE_TIMER = "idle_timer"  # nothing arrived for stable_seconds
    ANNOUNCED_COUNT = "announced_count"  # the scanner's Images in Acquisition arrived
    SITE_COUNT = "site_count"  # the count a site configures arrived
    GEOMETRY = "geometry"  # instances contiguous, slices cover their range without a gap

    @property
    def by_count(self) -> bool:
        """A count is definitive, so a study whole by counts need not wait the quiet time."""
        return self in (CompletionBasis.ANNOUNCED_COUNT, CompletionBasis.SITE_COUNT)


class Priority(StrEnum):
    """Worklist priority of a prediction, most pressing first (the order is the rank)."""

    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"
    NOT_ASSESSED = "not_assessed"  # the model could not judge it: never shown as routine


class DeliveryState(StrEnum):
    """Where one delivery of a result (DICOM, HL7, webhook, UPS) stands in the outbox.

    pending -> sending -> sent; a failed attempt goes to retrying (sent again when due),
    a refusal or the last attempt to dead (a person looks; ``triage deliveries retry``).
    A row left ``sending`` by a crashed sender is due again when its lease runs out.
    """

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"  # the destination acknowledged it: never sent again
    RETRYING = "retrying"  # an attempt failed; the next one is at next_attempt_at
    DEAD = "dead"  # refused, or attempts exhausted; last_error says why


class TaskOutcome(StrEnum):
    """What one run of the study task did (its log line and Celery result start with it)."""

    PREDICTED = "predicted"
    ALREADY_PREDICTED = "already predicted"
    NOT_ASSESSED = "not assessed"  # stored, but outside what the bundle can judge
    UNKNOWN_STUDY = "unknown study"
    STALE_VERSION = "stale version"  # a newer version of the study has its own task
    NOT_READY = "not ready"  # receiving again, or ignored by routing
    FAILED = "failed"


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
    STUDY_HELD = "study_held"
    STUDY_QUEUED = "study_queued"
    STUDY_REQUEUED = "study_requeued"
    INFERENCE_STARTED = "inference_started"
    PREDICTION_STORED = "prediction_stored"
    INFERENCE_FAILED = "inference_failed"
    RESULT_DELIVERED = "result_delivered"
    DELIVERY_FAILED = "delivery_failed"
    DELIVERY_REQUEUED = "delivery_requeued"
    RESULT_VIEWED = "result_viewed"
    # The web app's access log (IHE ATNA spirit): who read or acknowledged which study.
    WORKLIST_VIEWED = "worklist_viewed"
    STUDY_VIEWED = "study_viewed"
    STUDY_ACKNOWLEDGED = "study_acknowledged"
    AUDIT_LOG_VIEWED = "audit_log_viewed"
    AUDIT_QUERY_RUN = "audit_query_run"
    USER_SIGNED_IN = "user_signed_in"
    USER_SIGNED_OUT = "user_signed_out"
    SIGN_IN_FAILED = "sign_in_failed"
    USER_ADDED = "user_added"
    USER_REVOKED = "user_revoked"


class WebRole(StrEnum):
    """Who may do what in the web app (``triage users add NAME --role ROLE``)."""

    RADIOLOGIST = "radiologist"  # the worklist, study results, acknowledgements
    AUDITOR = "auditor"  # study results and the audit log, never acknowledges
    ADMIN = "admin"  # everything
