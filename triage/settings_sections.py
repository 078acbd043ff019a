"""The sections of :class:`triage.settings.Settings`, one per part of the system.

Each field names its flat environment variable once (``env`` in ``json_schema_extra``,
without the ``TRIAGE_`` prefix): that is the name operators set and errors mention, while
the code reads the field by section (``settings.dicom.port``). Values are checked here,
where the field is declared; the settings class only derives defaults and checks values
that span sections.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from triage.destinations import (
    DicomDestination,
    Hl7Destination,
    WebhookDestination,
)
from triage.destinations import check_ae_title as _check_ae_title

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = PROJECT_ROOT / "worker" / "bundles" / "demo"

CommaList = Annotated[list[str], NoDecode]


def env(name: str) -> dict[str, Any]:
    """The ``json_schema_extra`` that gives a field its flat variable ``TRIAGE_<name>``."""
    return {"env": name}


def _split_comma(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Section(BaseModel):
    """Base of the sections: unknown keys are refused, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class SpoolSection(Section):
    """Where received bytes live before and after they are recorded."""

    dir: Path = Field(
        default=Path("var/spool"),
        description="Where received instances are kept (default: VAR_DIR/spool).",
        json_schema_extra=env("SPOOL_DIR"),
    )
    quarantine_dir: Path = Field(
        default=Path("var/quarantine"),
        description="Where rejected datasets are kept with the reason (default: VAR_DIR/quarantine).",
        json_schema_extra=env("QUARANTINE_DIR"),
    )
    fsync: bool = Field(
        default=True,
        description="fsync each instance before answering success.",
        json_schema_extra=env("SPOOL_FSYNC"),
    )
    recovery_hours: float = Field(
        default=48.0,
        ge=0,
        description="At start, record spooled files changed this recently that lack a row (0 = off).",
        json_schema_extra=env("SPOOL_RECOVERY_HOURS"),
    )


class DatabaseSection(Section):
    """The database; its URL may carry a password, so it is a secret."""

    url: SecretStr = Field(
        default=SecretStr(""),
        description="SQLAlchemy URL; empty means SQLite at VAR_DIR/triage.sqlite.",
        json_schema_extra=env("DATABASE_URL"),
    )


class BrokerSection(Section):
    """The Celery broker; its URL may carry a password, so it is a secret."""

    url: SecretStr = Field(
        default=SecretStr(""),
        description="Celery broker; empty means a file-system transport under VAR_DIR.",
        json_schema_extra=env("BROKER_URL"),
    )
    visibility_timeout: float = Field(
        default=900.0,
        gt=0,
        description="Broker redelivery timeout; must exceed TASK_TIME_LIMIT.",
        json_schema_extra=env("VISIBILITY_TIMEOUT"),
    )


class DicomSection(Section):
    """The C-STORE SCP: address, identity, TLS, limits and timeouts."""

    port: int = Field(
        default=11112,
        ge=1,
        le=65535,
        description="C-STORE SCP port.",
        json_schema_extra=env("DICOM_PORT"),
    )
    bind: str = Field(
        default="0.0.0.0",
        description="Address the SCP listens on.",
        json_schema_extra=env("DICOM_BIND"),
    )
    ae_title: str = Field(
        default="TRIAGE", description="Our AE title.", json_schema_extra=env("AE_TITLE")
    )
    allowed_calling_aets: CommaList = Field(
        default_factory=list,
        description="Calling AE titles allowed in (comma list; empty = any).",
        json_schema_extra=env("ALLOWED_CALLING_AETS"),
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate: enables TLS.", json_schema_extra=env("TLS_CERT")
    )
    tls_key: Path | None = Field(
        default=None, description="PEM private key for TLS_CERT.", json_schema_extra=env("TLS_KEY")
    )
    tls_ca: Path | None = Field(
        default=None,
        description="PEM CA bundle: requires client certificates.",
        json_schema_extra=env("TLS_CA"),
    )
    max_associations: int = Field(
        default=16,
        ge=1,
        le=512,
        description="Concurrent associations.",
        json_schema_extra=env("MAX_ASSOCIATIONS"),
    )
    acse_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds to wait for association messages.",
        json_schema_extra=env("ACSE_TIMEOUT"),
    )
    dimse_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds to wait for DIMSE messages.",
        json_schema_extra=env("DIMSE_TIMEOUT"),
    )
    network_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds of network silence allowed.",
        json_schema_extra=env("NETWORK_TIMEOUT"),
    )
    max_pdu: int = Field(
        default=131072,
        ge=0,
        description="Maximum PDU size we receive (0 = unlimited).",
        json_schema_extra=env("MAX_PDU"),
    )
    fast_path: bool = Field(
        default=True,
        description="Streaming receive path (false = pynetdicom's stock receive path).",
        json_schema_extra=env("DICOM_FAST_PATH"),
    )
    association_request_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds from TCP accept to a complete association request.",
        json_schema_extra=env("ASSOCIATION_REQUEST_TIMEOUT"),
    )
    max_pending_connections: int = Field(
        default=128,
        ge=1,
        le=4096,
        description="Connections not yet associated (the oldest is closed when full).",
        json_schema_extra=env("MAX_PENDING_CONNECTIONS"),
    )
    max_instance_bytes: int = Field(
        default=2 * 1024**3,
        ge=1024,
        description="Largest data set of one C-STORE; larger ones are refused (bytes dropped).",
        json_schema_extra=env("MAX_INSTANCE_BYTES"),
    )

    @field_validator("allowed_calling_aets", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_comma(value)

    @field_validator("allowed_calling_aets")
    @classmethod
    def _valid_aets(cls, value: list[str]) -> list[str]:
        for aet in value:
            _check_ae_title(aet)
        return value

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        return _check_ae_title(value)

    # The TLS checks sit on the fields (declared cert, key, ca) so that each error is
    # reported against the variable to fix; a field that failed is absent from info.data.
    @field_validator("tls_cert", "tls_key", "tls_ca")
    @classmethod
    def _tls_files(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file {value} does not exist")
        cert_checked = "tls_cert" in info.data  # absent when the certificate itself failed
        cert = info.data.get("tls_cert")
        if info.field_name == "tls_key" and cert_checked and (cert is None) != (value is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if info.field_name == "tls_ca" and cert_checked and value is not None and cert is None:
            raise ValueError("tls_ca needs tls_cert and tls_key")
        return value


class CompletionSection(Section):
    """When a study counts as complete (see listener.completion)."""

    stable_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Idle time after the last instance before a study is complete.",
        json_schema_extra=env("STABLE_SECONDS"),
    )
    quiet_seconds: float = Field(
        default=3.0,
        ge=0,
        description="Quiet gap before a study whose deciding series (axial, soft tissue) are whole completes.",
        json_schema_extra=env("QUIET_SECONDS"),
    )
    expected_instances: int = Field(
        default=0,
        ge=0,
        description="Site-configured instance count of a whole series (0 = not used).",
        json_schema_extra=env("EXPECTED_INSTANCES"),
    )


class RoutingSection(Section):
    """Which studies go to the head-CT pipeline."""

    modalities: CommaList = Field(
        default_factory=lambda: ["CT"],
        description="Modalities sent to the stroke/ICH pipeline.",
        json_schema_extra=env("ROUTE_MODALITIES"),
    )
    body_parts: CommaList = Field(
        default_factory=lambda: ["HEAD", "BRAIN", "SKULL", "CEREBRUM"],
        description="Body Part Examined values that count as head.",
        json_schema_extra=env("ROUTE_BODY_PARTS"),
    )
    description_pattern: str = Field(
        default=r"(?i)\b(head|brain|cerebr|skull|neuro|stroke|kopf|schaedel|sch[aä]del|cr[aâ]ne)",
        description="Regex on study/series description that counts as head.",
        json_schema_extra=env("ROUTE_DESCRIPTION_PATTERN"),
    )

    @field_validator("modalities", "body_parts", mode="before")
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        return _split_comma(value)

    @field_validator("description_pattern")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value


class ModelsSection(Section):
    """The model bundles the worker runs and the site's threshold overrides."""

    bundle: Path = Field(
        default=DEMO_BUNDLE,
        description="Deployed model bundle directory.",
        json_schema_extra=env("MODEL_BUNDLE"),
    )
    shadow_bundle: Path | None = Field(
        default=None,
        description="Second bundle run beside, never sent.",
        json_schema_extra=env("SHADOW_BUNDLE"),
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Site threshold overrides per class (JSON).",
        json_schema_extra=env("THRESHOLDS"),
    )

    @field_validator("thresholds", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        # The flat variable arrives as text; a TOML table or argument arrives as a dict.
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object: {exc}") from exc
        return value


class WorkerSection(Section):
    """Inference workers: processes, threads, device, retries and time limits."""

    concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Inference processes per worker.",
        json_schema_extra=env("WORKER_CONCURRENCY"),
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="CPU threads for torch (0 = all cores).",
        json_schema_extra=env("TORCH_THREADS"),
    )
    inference_device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto = CUDA when present, else CPU.",
        json_schema_extra=env("INFERENCE_DEVICE"),
    )
    batch_size: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="Slices per model batch.",
        json_schema_extra=env("INFERENCE_BATCH_SIZE"),
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Deliveries of a study task before it fails.",
        json_schema_extra=env("MAX_ATTEMPTS"),
    )
    # A 2,000-slice study takes ~30 s on 2 CPU cores, so 10 minutes is a generous ceiling;
    # the reconciler treats a study processing longer than this (+60 s) as lost.
    task_time_limit: float = Field(
        default=600.0,
        gt=0,
        description="Hard limit for one study task (s).",
        json_schema_extra=env("TASK_TIME_LIMIT"),
    )
    reconcile_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Re-queue complete studies still without a result after this.",
        json_schema_extra=env("RECONCILE_AFTER_SECONDS"),
    )
    reconcile_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the reconciler looks.",
        json_schema_extra=env("RECONCILE_INTERVAL_SECONDS"),
    )
    series_min_slices: int = Field(
        default=5,
        ge=1,
        description="Fewest slices a series needs to be read.",
        json_schema_extra=env("SERIES_MIN_SLICES"),
    )
    series_max_tilt_degrees: float = Field(
        default=35.0,
        ge=0,
        le=90,
        description="Largest gantry tilt a series may have and still be read.",
        json_schema_extra=env("SERIES_MAX_TILT_DEGREES"),
    )


class DeliverySection(Section):
    """Where results are sent (DICOM, HL7 v2, webhook, UPS) and how the outbox retries.

    Destinations are comma lists in the forms of :mod:`triage.destinations`; with none
    configured (the default) nothing is queued for delivery.
    """

    dicom_destinations: CommaList = Field(
        default_factory=list,
        description="DICOM stores for SR, key images and KOS: AET@host:port[+tls], comma list (+tls = DICOM over TLS).",
        json_schema_extra=env("DICOM_DESTINATIONS"),
    )
    tls_ca: Path | None = Field(
        default=None,
        description="PEM CA bundle that +tls destinations must be signed by (empty = system CAs).",
        json_schema_extra=env("DICOM_DESTINATIONS_TLS_CA"),
    )
    hl7_destinations: CommaList = Field(
        default_factory=list,
        description="HL7 v2 ORU^R01 receivers over MLLP: host:port, comma list.",
        json_schema_extra=env("HL7_DESTINATIONS"),
    )
    webhook_urls: CommaList = Field(
        default_factory=list,
        description="Webhook URLs that receive the JSON result, comma list.",
        json_schema_extra=env("WEBHOOK_URLS"),
    )
    webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        description="HMAC-SHA256 key that signs webhook bodies (required with WEBHOOK_URLS).",
        json_schema_extra=env("WEBHOOK_SECRET"),
    )
    ups_destinations: CommaList = Field(
        default_factory=list,
        description="UPS worklists that get a workitem per result: AET@host:port, comma list.",
        json_schema_extra=env("UPS_DESTINATIONS"),
    )
    max_attempts: int = Field(
        default=12,
        ge=1,
        le=100,
        description="Send attempts per delivery before it is dead.",
        json_schema_extra=env("DELIVERY_MAX_ATTEMPTS"),
    )
    backoff_seconds: float = Field(
        default=5.0,
        gt=0,
        description="First retry delay; doubles each attempt, with jitter.",
        json_schema_extra=env("DELIVERY_BACKOFF_SECONDS"),
    )
    backoff_max_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Longest retry delay.",
        json_schema_extra=env("DELIVERY_BACKOFF_MAX_SECONDS"),
    )
    ack_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds to wait for a connection and for each acknowledgement (C-STORE, HL7 ACK, HTTP).",
        json_schema_extra=env("DELIVERY_ACK_TIMEOUT"),
    )
    poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the delivery worker looks for due deliveries.",
        json_schema_extra=env("DELIVERY_POLL_SECONDS"),
    )
    key_images: bool = Field(
        default=True,
        description="Send Grad-CAM key images (Secondary Capture) and a KOS with the SR.",
        json_schema_extra=env("KEY_IMAGES"),
    )
    key_image_count: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Key images per result (the highest-scoring slices).",
        json_schema_extra=env("KEY_IMAGE_COUNT"),
    )
    hl7_sending_application: str = Field(
        default="PACS_TRIAGE",
        min_length=1,
        max_length=180,
        pattern=r"^[A-Za-z0-9_. -]+$",
        description="MSH-3 of our HL7 messages.",
        json_schema_extra=env("HL7_SENDING_APPLICATION"),
    )

    @field_validator(
        "dicom_destinations", "hl7_destinations", "webhook_urls", "ups_destinations", mode="before"
    )
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        return _split_comma(value)

    @field_validator("dicom_destinations")
    @classmethod
    def _valid_dicom(cls, value: list[str]) -> list[str]:
        return [DicomDestination.parse(text).key for text in value]

    @field_validator("ups_destinations")
    @classmethod
    def _valid_ups(cls, value: list[str]) -> list[str]:
        return [DicomDestination.parse(text, allow_tls=False).key for text in value]

    @field_validator("hl7_destinations")
    @classmethod
    def _valid_hl7(cls, value: list[str]) -> list[str]:
        return [Hl7Destination.parse(text).key for text in value]

    @field_validator("webhook_urls")
    @classmethod
    def _valid_webhooks(cls, value: list[str]) -> list[str]:
        return [WebhookDestination.parse(text).key for text in value]

    @field_validator("webhook_secret")
    @classmethod
    def _secret_with_urls(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("webhook_urls") and not value.get_secret_value():
            raise ValueError("WEBHOOK_URLS are set: a webhook secret is required to sign them")
        return value

    @field_validator("tls_ca")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @field_validator("backoff_max_seconds")
    @classmethod
    def _cap_above_base(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("backoff_seconds")
        if base is not None and value < base:
            raise ValueError("must be at least DELIVERY_BACKOFF_SECONDS")
        return value

    def dicom(self) -> list[DicomDestination]:
        """The DICOM stores, parsed."""
        return [DicomDestination.parse(text) for text in self.dicom_destinations]

    def ups(self) -> list[DicomDestination]:
        """The UPS worklists, parsed."""
        return [DicomDestination.parse(text) for text in self.ups_destinations]

    def hl7(self) -> list[Hl7Destination]:
        """The HL7 receivers, parsed."""
        return [Hl7Destination.parse(text) for text in self.hl7_destinations]

    def webhooks(self) -> list[WebhookDestination]:
        """The webhook endpoints, parsed."""
        return [WebhookDestination.parse(text) for text in self.webhook_urls]

    @property
    def any(self) -> bool:
        """Whether any destination is configured (none: nothing is built or queued)."""
        return bool(
            self.dicom_destinations
            or self.hl7_destinations
            or self.webhook_urls
            or self.ups_destinations
        )


class WebSection(Section):
    """The web app (``triage web``): worklist page, API, audit log and metrics."""

    port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="HTTP(S) port of the web app (0 = any free port).",
        json_schema_extra=env("WEB_PORT"),
    )
    bind: str = Field(
        default="127.0.0.1",
        description="Address the web app listens on.",
        json_schema_extra=env("WEB_BIND"),
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate: the web app speaks HTTPS only.",
        json_schema_extra=env("WEB_TLS_CERT"),
    )
    tls_key: Path | None = Field(
        default=None,
        description="PEM private key for WEB_TLS_CERT.",
        json_schema_extra=env("WEB_TLS_KEY"),
    )
    session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 7,
        description="Hours a browser sign-in lasts.",
        json_schema_extra=env("WEB_SESSION_HOURS"),
    )
    live_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="How often the live worklist checks the database for changes.",
        json_schema_extra=env("WEB_POLL_SECONDS"),
    )
    min_free_mb: int = Field(
        default=1024,
        ge=0,
        description="Spool free space below which the web app reports not ready (MiB).",
        json_schema_extra=env("WEB_MIN_FREE_MB"),
    )

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _tls_files(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file {value} does not exist")
        pair_checked = info.field_name == "tls_key" and "tls_cert" in info.data
        if pair_checked and (info.data.get("tls_cert") is None) != (value is None):
            raise ValueError("web tls_cert and tls_key must be given together")
        return value
