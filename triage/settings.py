"""The one settings object of pacs-triage.

Every tunable comes from here: environment variables prefixed ``TRIAGE_``, an optional
TOML file named by ``TRIAGE_CONFIG_FILE``, then the defaults (embedded SQLite, a Celery
transport that needs no server, the shipped demo model bundle). The object is built once
per process by :func:`get_settings` and passed down explicitly; nothing reads the
environment elsewhere.

The settings are grouped in sections (``settings.dicom.port``, ``settings.worker.concurrency``,
see :mod:`triage.settings_sections`), but every setting keeps the flat environment name
operators already use (``TRIAGE_DICOM_PORT``): sites deploy with those names, so a
regrouping of the code must not break a deployment. The nested form
(``TRIAGE_DICOM__PORT``, a ``[dicom]`` table in the TOML file) works as well. Flat names are
also accepted as keyword arguments and TOML keys (``load_settings(dicom_port=104)``), and
every error names the flat variable to fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from triage.settings_sections import (
    PROJECT_ROOT,
    BrokerSection,
    CompletionSection,
    DatabaseSection,
    DeliverySection,
    DicomSection,
    ModelsSection,
    RoutingSection,
    SpoolSection,
    WebSection,
    WorkerSection,
)

ENV_PREFIX = "TRIAGE_"
_SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "secret", "token"}


class SettingsError(ValueError):
    """A setting has a wrong value; the message names it by its environment variable."""


class Settings(BaseSettings):
    """Configuration for every pacs-triage process (listener, worker, CLI)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    var_dir: Path = Field(Path("var"), description="Working directory for embedded defaults.")
    spool: SpoolSection = Field(default_factory=SpoolSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    broker: BrokerSection = Field(default_factory=BrokerSection)
    dicom: DicomSection = Field(default_factory=DicomSection)
    completion: CompletionSection = Field(default_factory=CompletionSection)
    routing: RoutingSection = Field(default_factory=RoutingSection)
    models: ModelsSection = Field(default_factory=ModelsSection)
    worker: WorkerSection = Field(default_factory=WorkerSection)
    delivery: DeliverySection = Field(default_factory=DeliverySection)
    web: WebSection = Field(default_factory=WebSection)

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        # The sources already route their own keys; this covers Settings.model_validate().
        return route_flat_names(data) if isinstance(data, Mapping) else data

    @model_validator(mode="after")
    def _derive_and_cross_check(self) -> Settings:
        # Folders follow VAR_DIR unless set: moving VAR_DIR must not leave the spool behind.
        if "dir" not in self.spool.model_fields_set:
            self.spool.dir = self.var_dir / "spool"
        if "quarantine_dir" not in self.spool.model_fields_set:
            self.spool.quarantine_dir = self.var_dir / "quarantine"
        if not self.database.url.get_secret_value():
            sqlite = f"sqlite:///{(self.var_dir / 'triage.sqlite').as_posix()}"
            self.database.url = SecretStr(sqlite)
        if not self.broker.url.get_secret_value():
            self.broker.url = SecretStr("filesystem://")
        # A redelivery before the hard limit would run a live task twice.
        if self.broker.visibility_timeout <= self.worker.task_time_limit:
            raise ValueError(
                f"{ENV_PREFIX}VISIBILITY_TIMEOUT must exceed {ENV_PREFIX}TASK_TIME_LIMIT"
            )
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
        # Highest priority first. Flat keys are routed per source, before the sources are
        # merged, so that an argument ``dicom_port`` beats an environment's TRIAGE_DICOM_PORT.
        sources: list[PydanticBaseSettingsSource] = [
            _FlatKeysRouted(init_settings),
            env_settings,  # TRIAGE_VAR_DIR and the nested TRIAGE_DICOM__PORT form
            FlatEnvSource(settings_cls),
        ]
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
        if config_file:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file))
            sources.append(_FlatKeysRouted(toml))
        return tuple(sources)


def _flat_names() -> dict[str, tuple[str, str]]:
    """Flat name (``dicom_port``) -> (section, field) for every sectioned setting."""
    names: dict[str, tuple[str, str]] = {}
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, sub in model.model_fields.items():
            extra = sub.json_schema_extra
            flat = extra.get("env") if isinstance(extra, dict) else None
            if not isinstance(flat, str) or flat.lower() in names:
                raise TypeError(f"{section}.{name} needs a unique flat env name")
            names[flat.lower()] = (section, name)
    return names


FLAT_NAMES = _flat_names()
_FLAT_BY_PATH = {path: flat for flat, path in FLAT_NAMES.items()}


def route_flat_names(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with flat keys (``dicom_port``) moved into their sections (``dicom.port``).

    Within one source a flat key wins over the same setting given in its section. Unknown
    keys stay where they are, so validation refuses them by name.
    """
    routed: dict[str, Any] = {}
    flat: list[tuple[str, Any]] = []
    for key, value in data.items():
        if key.lower() in FLAT_NAMES:
            flat.append((key.lower(), value))
        elif isinstance(value, BaseModel):
            routed[key] = value.model_dump(exclude_unset=True)
        elif isinstance(value, Mapping):
            routed[key] = dict(value)
        else:
            routed[key] = value
    for key, value in flat:
        section, name = FLAT_NAMES[key]
        target = routed.get(section)
        if not isinstance(target, dict):
            target = routed[section] = {}
        target[name] = value
    return routed


class FlatEnvSource(PydanticBaseSettingsSource):
    """Reads each sectioned setting from its flat variable (``TRIAGE_DICOM_PORT``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ does the whole job

    def __call__(self) -> dict[str, Any]:
        environ = {key.upper(): value for key, value in os.environ.items()}
        values: dict[str, Any] = {}
        for flat, (section, name) in FLAT_NAMES.items():
            value = environ.get(f"{ENV_PREFIX}{flat.upper()}")
            if value is not None:
                values.setdefault(section, {})[name] = value
        return values


class _FlatKeysRouted(PydanticBaseSettingsSource):
    """Another source (arguments, TOML file) with its flat keys routed into sections."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return route_flat_names(self._inner())


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable an error location refers to (``TRIAGE_DICOM_PORT``)."""
    if not loc:
        return "settings"
    if len(loc) >= 2 and (str(loc[0]), str(loc[1])) in _FLAT_BY_PATH:
        return f"{ENV_PREFIX}{_FLAT_BY_PATH[str(loc[0]), str(loc[1])].upper()}"
    if len(loc) >= 2 and str(loc[0]) in Settings.model_fields:  # unknown key in a section
        return f"{ENV_PREFIX}{loc[0]}__{loc[1]}".upper()
    return f"{ENV_PREFIX}{loc[0]}".upper()


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one message naming each setting.

    Keyword arguments take flat names (``spool_dir=...``) or sections (``dicom={...}``)
    and win over the environment and the TOML file.

    Raises
    ------
    SettingsError
        When any value is wrong; the message lists ``TRIAGE_<NAME>: reason`` lines.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"{env_name(error['loc'])}: {error['msg']}" for error in exc.errors()]
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once at first use."""
    return load_settings()


def mask_url(url: str) -> str:
    """``url`` with its password shown as ``***``: URLs are printed and logged, secrets never."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "***"
    masked = url
    if password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        masked = masked.replace(f"//{parts.netloc}", f"//{parts.username or ''}:***@{host}", 1)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
        query = urlencode(
            [(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
        )
        masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def _shown(value: Any, *, relative: bool = False) -> str:
    """A value as text for a table; secrets masked, paths under the project relative if asked."""
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        # A URL shows all but its password; any other secret (a signing key) shows nothing.
        return mask_url(secret) if "://" in secret or not secret else "***"
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, Path) and relative and value.is_relative_to(PROJECT_ROOT):
        return value.relative_to(PROJECT_ROOT).as_posix()
    return "" if value is None else str(value)


def _rows() -> list[tuple[str, str | None, FieldInfo]]:
    """(flat name, section or None, field) for every setting, in declaration order."""
    rows: list[tuple[str, str | None, FieldInfo]] = []
    for name, field in Settings.model_fields.items():
        if name not in {section for section, _ in FLAT_NAMES.values()}:
            rows.append((name, None, field))
    for flat, (section, name) in FLAT_NAMES.items():
        model = Settings.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        rows.append((flat, section, model.model_fields[name]))
    return rows


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, for docs and --help."""
    return [
        (
            f"{ENV_PREFIX}{flat.upper()}",
            _shown(field.get_default(call_default_factory=True), relative=True),
            field.description or "",
        )
        for flat, _, field in _rows()
    ]


def settings_values(settings: Settings) -> list[tuple[str, str]]:
    """(environment variable, value in use) for every setting, secrets masked."""
    values = []
    for flat, section, _ in _rows():
        if section is None:
            value = getattr(settings, flat)
        else:
            value = getattr(getattr(settings, section), FLAT_NAMES[flat][1])
        values.append((f"{ENV_PREFIX}{flat.upper()}", _shown(value)))
    return values


def setting_path(env: str) -> str:
    """The attribute path of an environment variable (``TRIAGE_DICOM_PORT`` -> ``dicom.port``)."""
    flat = env.removeprefix(ENV_PREFIX).lower()
    return ".".join(FLAT_NAMES.get(flat, (flat,)))
