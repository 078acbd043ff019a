"""The one settings object of pacs-triage.

Every tunable comes from here: environment variables prefixed ``TRIAGE_``, an optional
TOML file named by ``TRIAGE_CONFIG_FILE``, then the defaults below (embedded SQLite, a
Celery transport that needs no server, the shipped demo model bundle). The object is
built once per process by :func:`get_settings` and passed down explicitly; nothing
reads the environment elsewhere.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "TRIAGE_"
_AE_TITLE = re.compile(
    r"^[\x20-\x5b\x5d-\x7e]{1,16}$"
)  # default character repertoire, no backslash
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = PROJECT_ROOT / "worker" / "bundles" / "demo"

CommaList = Annotated[list[str], NoDecode]


class SettingsError(ValueError):
    """A setting has a wrong value; the message names it by its environment variable."""


def _split_comma(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Configuration for every pacs-triage process (listener, worker, CLI)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # --- storage -------------------------------------------------------------------
    var_dir: Path = Field(Path("var"), description="Working directory for embedded defaults.")
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means SQLite at VAR_DIR/triage.sqlite."
    )
    spool_dir: Path = Field(Path("var/spool"), description="Where received instances are kept.")
    quarantine_dir: Path = Field(
        Path("var/quarantine"), description="Where rejected datasets are kept with the reason."
    )
    spool_fsync: bool = Field(True, description="fsync each instance before answering success.")
    spool_recovery_hours: float = Field(
        48.0,
        ge=0,
        description="At start, record spooled files changed this recently that lack a row (0 = off).",
    )

    # --- queue ---------------------------------------------------------------------
    broker_url: str = Field(
        "", description="Celery broker; empty means a file-system transport under VAR_DIR."
    )

    # --- DICOM listener ---------------------------------------------------------------
    dicom_port: int = Field(11112, ge=1, le=65535, description="C-STORE SCP port.")
    dicom_bind: str = Field("0.0.0.0", description="Address the SCP listens on.")
    ae_title: str = Field("TRIAGE", description="Our AE title.")
    allowed_calling_aets: CommaList = Field(
        default_factory=list, description="Calling AE titles allowed in (comma list; empty = any)."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate: enables TLS.")
    tls_key: Path | None = Field(None, description="PEM private key for TLS_CERT.")
    tls_ca: Path | None = Field(None, description="PEM CA bundle: requires client certificates.")
    max_associations: int = Field(16, ge=1, le=512, description="Concurrent associations.")
    acse_timeout: float = Field(30.0, gt=0, description="Seconds to wait for association messages.")
    dimse_timeout: float = Field(60.0, gt=0, description="Seconds to wait for DIMSE messages.")
    network_timeout: float = Field(60.0, gt=0, description="Seconds of network silence allowed.")
    max_pdu: int = Field(131072, ge=0, description="Maximum PDU size we receive (0 = unlimited).")
    dicom_fast_path: bool = Field(
        True, description="Streaming receive path (false = pynetdicom's stock receive path)."
    )
    association_request_timeout: float = Field(
        5.0, gt=0, description="Seconds from TCP accept to a complete association request."
    )
    max_pending_connections: int = Field(
        128,
        ge=1,
        le=4096,
        description="Connections not yet associated (the oldest is closed when full).",
    )
    max_instance_bytes: int = Field(
        2 * 1024**3,
        ge=1024,
        description="Largest data set of one C-STORE; larger ones are refused (bytes dropped).",
    )

    # --- study completion ----------------------------------------------------------
    stable_seconds: float = Field(
        60.0, gt=0, description="Idle time after the last instance before a study is complete."
    )
    quiet_seconds: float = Field(
        3.0, ge=0, description="Quiet gap before a study whose series are all whole completes."
    )
    expected_instances: int = Field(
        0, ge=0, description="Site-configured instance count of a whole series (0 = not used)."
    )

    # --- routing -------------------------------------------------------------------
    route_modalities: CommaList = Field(
        default_factory=lambda: ["CT"], description="Modalities sent to the stroke/ICH pipeline."
    )
    route_body_parts: CommaList = Field(
        default_factory=lambda: ["HEAD", "BRAIN", "SKULL", "CEREBRUM"],
        description="Body Part Examined values that count as head.",
    )
    route_description_pattern: str = Field(
        r"(?i)\b(head|brain|cerebr|skull|neuro|stroke|kopf|schaedel|sch[aä]del|cr[aâ]ne)",
        description="Regex on study/series description that counts as head.",
    )

    # --- models --------------------------------------------------------------------
    model_bundle: Path = Field(DEMO_BUNDLE, description="Deployed model bundle directory.")
    shadow_bundle: Path | None = Field(None, description="Second bundle run beside, never sent.")

    # --- worker --------------------------------------------------------------------
    worker_concurrency: int = Field(1, ge=1, le=64, description="Inference processes per worker.")
    torch_threads: int = Field(
        0, ge=0, le=256, description="CPU threads for torch (0 = all cores)."
    )
    inference_device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto = CUDA when present, else CPU.",
    )
    inference_batch_size: int = Field(16, ge=1, le=4096, description="Slices per model batch.")
    max_attempts: int = Field(
        3, ge=1, le=20, description="Deliveries of a study task before it fails."
    )
    # A 2,000-slice study takes ~30 s on 2 CPU cores, so 10 minutes is a generous ceiling;
    # the reconciler treats a study processing longer than this (+60 s) as lost.
    task_time_limit: float = Field(600.0, gt=0, description="Hard limit for one study task (s).")
    visibility_timeout: float = Field(
        900.0, gt=0, description="Broker redelivery timeout; must exceed TASK_TIME_LIMIT."
    )
    reconcile_after_seconds: float = Field(
        120.0, gt=0, description="Re-queue complete studies still without a result after this."
    )
    reconcile_interval_seconds: float = Field(
        30.0, gt=0, description="How often the reconciler looks."
    )
    series_min_slices: int = Field(5, ge=1, description="Fewest slices a series needs to be read.")
    series_max_tilt_degrees: float = Field(
        35.0, ge=0, le=90, description="Largest gantry tilt a series may have and still be read."
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="Site threshold overrides per class (JSON)."
    )

    @field_validator("allowed_calling_aets", "route_modalities", "route_body_parts", mode="before")
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        return _split_comma(value)

    @field_validator("allowed_calling_aets")
    @classmethod
    def _valid_aets(cls, value: list[str]) -> list[str]:
        for aet in value:
            if not _AE_TITLE.match(aet):
                raise ValueError(f"{aet!r} is not a valid AE title (1-16 characters, no '\\')")
        return value

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        if not _AE_TITLE.match(value) or not value.strip():
            raise ValueError(f"{value!r} is not a valid AE title (1-16 characters, no '\\')")
        return value

    @field_validator("route_description_pattern")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _fill_defaults_and_check_tls(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.var_dir / 'triage.sqlite').as_posix()}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if self.visibility_timeout <= self.task_time_limit:
            raise ValueError("visibility_timeout must exceed task_time_limit")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca needs tls_cert and tls_key")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file {path} does not exist")
        return self

    @property
    def broker_dir(self) -> Path:
        """Folder of the embedded file-system broker (used when BROKER_URL is filesystem://)."""
        return self.var_dir / "broker"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one message naming each setting.

    Raises
    ------
    SettingsError
        When any value is wrong; the message lists ``TRIAGE_<NAME>: reason`` lines.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = "__".join(str(part) for part in error["loc"]) or "settings"
            name = f"{ENV_PREFIX}{loc.upper()}" if error["loc"] else "settings"
            lines.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once at first use."""
    return load_settings()


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, for docs and --help."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = ",".join(default)
        if isinstance(default, Path):
            try:
                default = default.relative_to(PROJECT_ROOT).as_posix()
            except ValueError:
                default = str(default)
        rows.append((f"{ENV_PREFIX}{name.upper()}", str(default), field.description or ""))
    return rows
