"""Settings: environment, TOML file and defaults, and errors that name the variable to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from triage.settings import SettingsError, get_settings, load_settings, settings_table

REPO = Path(__file__).resolve().parents[1]


def test_defaults_need_no_server(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{(tmp_path / 'triage.sqlite').as_posix()}"
    assert settings.broker_url == "filesystem://"
    assert settings.broker_dir == tmp_path / "broker"
    assert settings.dicom_port == 11112
    assert settings.allowed_calling_aets == []
    assert settings.route_modalities == ["CT"]
    assert settings.tls_cert is None


@pytest.mark.parametrize("value", ["abc", "70000", "0", "-5", "11112.5"])
def test_wrong_port_fails_naming_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_DICOM_PORT", value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "TRIAGE_DICOM_PORT" in str(raised.value)
    assert "TRIAGE_STABLE_SECONDS" not in str(raised.value), "only the wrong one is named"


def test_every_wrong_value_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_STABLE_SECONDS", "0")
    monkeypatch.setenv("TRIAGE_MAX_ASSOCIATIONS", "many")
    monkeypatch.setenv("TRIAGE_ROUTE_DESCRIPTION_PATTERN", "(unclosed")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    for name in (
        "TRIAGE_STABLE_SECONDS",
        "TRIAGE_MAX_ASSOCIATIONS",
        "TRIAGE_ROUTE_DESCRIPTION_PATTERN",
    ):
        assert name in message


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="TRIAGE_DICOM_PROT"):
        load_settings(dicom_prot=104)


def test_environment_values_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRIAGE_DICOM_PORT", "104")
    monkeypatch.setenv("TRIAGE_STABLE_SECONDS", "12.5")
    monkeypatch.setenv("TRIAGE_SPOOL_FSYNC", "false")
    monkeypatch.setenv("TRIAGE_DATABASE_URL", "postgresql+psycopg://u@db/x")
    monkeypatch.setenv("TRIAGE_SPOOL_DIR", str(tmp_path / "spool"))
    settings = load_settings()
    assert settings.dicom_port == 104
    assert settings.stable_seconds == 12.5
    assert settings.spool_fsync is False
    assert settings.database_url == "postgresql+psycopg://u@db/x"
    assert settings.spool_dir == tmp_path / "spool"


def test_comma_lists_are_split_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_ALLOWED_CALLING_AETS", " CT_ROOM_1, MR 2 ,,PACS")
    monkeypatch.setenv("TRIAGE_ROUTE_MODALITIES", "CT,MR")
    monkeypatch.setenv("TRIAGE_ROUTE_BODY_PARTS", "HEAD")
    settings = load_settings()
    assert settings.allowed_calling_aets == ["CT_ROOM_1", "MR 2", "PACS"]
    assert settings.route_modalities == ["CT", "MR"]
    assert settings.route_body_parts == ["HEAD"]


@pytest.mark.parametrize("aet", ["BACK\\SLASH", "SEVENTEEN_CHARS_X", "TAB\tAE"])
def test_invalid_calling_ae_title_is_named(aet: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_ALLOWED_CALLING_AETS", f"GOOD,{aet}")
    with pytest.raises(SettingsError, match="TRIAGE_ALLOWED_CALLING_AETS"):
        load_settings()


@pytest.mark.parametrize("title", ["", "   ", "X" * 17])
def test_invalid_own_ae_title_is_named(title: str) -> None:
    with pytest.raises(SettingsError, match="TRIAGE_AE_TITLE"):
        load_settings(ae_title=title)


def test_toml_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "triage.toml"
    config.write_text(
        'ae_title = "TRIAGE_TOML"\n'
        "dicom_port = 4242\n"
        "quiet_seconds = 1.5\n"
        'allowed_calling_aets = ["CT1", "CT2"]\n'
        'route_body_parts = "HEAD, NECK"\n'
    )
    monkeypatch.setenv("TRIAGE_CONFIG_FILE", str(config))
    monkeypatch.setenv("TRIAGE_DICOM_PORT", "5151")

    settings = load_settings()

    assert settings.ae_title == "TRIAGE_TOML"
    assert settings.quiet_seconds == 1.5
    assert settings.allowed_calling_aets == ["CT1", "CT2"]
    assert settings.route_body_parts == ["HEAD", "NECK"]
    assert settings.dicom_port == 5151, "the environment overrides the file"
    assert load_settings(dicom_port=6161).dicom_port == 6161, "arguments override both"


def test_wrong_value_in_toml_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "triage.toml"
    config.write_text("dicom_port = 70000\n")
    monkeypatch.setenv("TRIAGE_CONFIG_FILE", str(config))
    with pytest.raises(SettingsError, match="TRIAGE_DICOM_PORT"):
        load_settings()


def test_tls_needs_certificate_and_key_together(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked here")
    with pytest.raises(SettingsError, match="tls_cert and tls_key must be given together"):
        load_settings(tls_cert=cert)
    with pytest.raises(SettingsError, match="tls_ca needs tls_cert"):
        load_settings(tls_ca=cert)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tls_cert=cert, tls_key=tmp_path / "missing.key")


def test_get_settings_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("TRIAGE_DICOM_PORT", "2000")
        first = get_settings()
        monkeypatch.setenv("TRIAGE_DICOM_PORT", "3000")
        assert get_settings() is first and first.dicom_port == 2000
    finally:
        get_settings.cache_clear()


def test_settings_table_lists_every_variable() -> None:
    names = {row[0] for row in settings_table()}
    assert {"TRIAGE_DICOM_PORT", "TRIAGE_ALLOWED_CALLING_AETS", "TRIAGE_TLS_CA"} <= names
    assert all(description for _, _, description in settings_table())


def test_cli_refuses_to_start_with_wrong_value_and_names_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "triage.cli", "db", "upgrade"],
        env={"PYTHONPATH": str(REPO), "TRIAGE_DICOM_PORT": "abc", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "TRIAGE_DICOM_PORT" in done.stderr
