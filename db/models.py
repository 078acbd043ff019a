"""Typed SQLAlchemy 2.0 models: studies, series, instances, jobs, predictions, deliveries, audit,
and the web app's users, sessions, sign-in failures and acknowledgements.

The database is the source of truth: a study's state here decides what the reconciler
re-queues, and a prediction row is the durable record of what a model said, with the
exact bundle (name, version, sha256) that said it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.vocabulary import (
    AuditEventType,
    DeliveryState,
    JobState,
    Priority,
    StudyState,
    WebRole,
)

UID = String(64)


def utcnow() -> datetime:
    """Timezone-aware now; every stored time is UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite would hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; pacs-triage stores UTC-aware times only")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _enum(enum_cls: type, length: int = 32) -> Enum:
    """A vocabulary column stored as plain VARCHAR(length) text (no native type to migrate)."""
    return Enum(
        enum_cls,
        native_enum=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base for every pacs-triage table."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class Study(Base):
    """One DICOM study as received; ``version`` increases each time it is completed again."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    state: Mapped[StudyState] = mapped_column(_enum(StudyState), default=StudyState.RECEIVING)
    state_reason: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=0)
    calling_aet: Mapped[str | None] = mapped_column(String(16))
    modality: Mapped[str | None] = mapped_column(String(16))
    study_description: Mapped[str | None] = mapped_column(String(128))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[str | None] = mapped_column(String(8))
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    series: Mapped[list[Series]] = relationship(back_populates="study", cascade="all")

    __table_args__ = (
        Index("ix_studies_state", "state"),
        Index("ix_studies_first_received", "first_received_at"),
    )


class Series(Base):
    """One series of a study, with the count it announced (if any) for completion."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    series_description: Mapped[str | None] = mapped_column(String(128))
    series_number: Mapped[int | None] = mapped_column(Integer)
    expected_instances: Mapped[int | None] = mapped_column(Integer)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", cascade="all")

    __table_args__ = (Index("ix_series_study", "study_id"),)


class Instance(Base):
    """One received SOP instance and where its bytes lie in the spool."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    position_z: Mapped[float | None] = mapped_column(Float)
    image_position: Mapped[str | None] = mapped_column(String(96))
    image_orientation: Mapped[str | None] = mapped_column(String(192))
    calling_aet: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    file_path: Mapped[str] = mapped_column(Text)
    file_size: Mapped[int] = mapped_column(BigInteger)

    series: Mapped[Series] = relationship(back_populates="instances")

    __table_args__ = (Index("ix_instances_series", "series_id"),)


class Job(Base):
    """One inference run of one study version through one bundle; the idempotency key."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    study_version: Mapped[int] = mapped_column(Integer)
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        UniqueConstraint("study_id", "study_version", "bundle_sha256", name="uq_job_key"),
    )


class Prediction(Base):
    """What a model said about one study version, with the exact bundle that said it."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    study_version: Mapped[int] = mapped_column(Integer)
    series_instance_uid: Mapped[str | None] = mapped_column(UID)
    bundle_name: Mapped[str] = mapped_column(String(128))
    bundle_version: Mapped[str] = mapped_column(String(64))
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    synthetic_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    probabilities: Mapped[dict[str, Any]] = mapped_column()
    flags: Mapped[dict[str, Any]] = mapped_column()
    thresholds: Mapped[dict[str, Any]] = mapped_column()
    priority: Mapped[Priority] = mapped_column(_enum(Priority, length=16))
    slice_scores: Mapped[list[Any]] = mapped_column()
    timings: Mapped[dict[str, Any]] = mapped_column()
    # Whether the result may be used: assessed needs an adequate input within the domain.
    assessed: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    in_domain: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    domain_score: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("study_id", "study_version", "bundle_sha256", name="uq_prediction_key"),
        # The worklist ranks every study by its newest deployed result's priority from this
        # index alone (rows are large: they carry the slice scores).
        Index("ix_predictions_latest", "study_id", "shadow", "id", "priority"),
    )


class Delivery(Base):
    """One result on its way to one destination: the outbox row the delivery worker sends.

    Written in the same transaction as its prediction, so a result is never stored without
    the duty to deliver it. ``result_dir`` holds the spooled documents (SR, key images,
    KOS) that a DICOM delivery sends; ``document_uids`` names them for every channel.
    """

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str] = mapped_column(String(256))
    state: Mapped[DeliveryState] = mapped_column(
        _enum(DeliveryState, length=16), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    result_dir: Mapped[str | None] = mapped_column(Text)
    document_uids: Mapped[dict[str, Any]] = mapped_column(default=dict)
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("prediction_id", "channel", "destination", name="uq_delivery_key"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
        Index("ix_deliveries_prediction_state", "prediction_id", "state"),
    )


class AuditEvent(Base):
    """An append-only audit record; written only through :func:`db.audit.record_event`."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    event_type: Mapped[AuditEventType] = mapped_column(_enum(AuditEventType))
    actor: Mapped[str] = mapped_column(String(128))
    study_instance_uid: Mapped[str | None] = mapped_column(UID)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        Index("ix_audit_study", "study_instance_uid"),
        Index("ix_audit_at", "at"),
    )


class WebUser(Base):
    """A person (or an API client) of the web app; only the sha256 of their token is kept.

    A token is shown once when the user is added; losing it means revoking and adding again,
    so a stolen copy of the database never yields a working credential.
    """

    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[WebRole] = mapped_column(_enum(WebRole, length=16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class WebSession(Base):
    """A browser session: the cookie holds a random id, the row only its sha256 and CSRF token."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class SignInFailure(Base):
    """One refused sign-in, by client address: repeated failures slow the next attempt down."""

    __tablename__ = "web_sign_in_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_sign_in_failures_address_at", "address", "at"),)


class Acknowledgement(Base):
    """A person said they have seen a study version's triage result (shown on the worklist)."""

    __tablename__ = "web_acknowledgements"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    study_version: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("study_id", "study_version", "user_id", name="uq_acknowledgement_key"),
    )
