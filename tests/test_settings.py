"""Settings: environment, TOML file and defaults, and errors that name the variable to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from triage.cli import main
from triage.settings import (
    SettingsError,
    get_settings,
    load_settings,
    mask_url,
    setting_path,
    settings_table,
)

REPO = Path(__file__).resolve().parents[1]


def test_defaults_need_no_server(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path)
    assert (
        settings.database.url.get_secret_value()
        == f"sqlite:///{(tmp_path / 'triage.sqlite').as_posix()}"
    )
    assert settings.broker.url.get_secret_value() == "filesystem://"
    assert settings.broker_dir == tmp_path / "broker"
    assert settings.dicom.port == 11112
    assert settings.dicom.allowed_calling_aets == []
    assert settings.routing.modalities == ["CT"]
    assert settings.dicom.tls_cert is None


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
    assert settings.dicom.port == 104
    assert settings.completion.stable_seconds == 12.5
    assert settings.spool.fsync is False
    assert settings.database.url.get_secret_value() == "postgresql+psycopg://u@db/x"
    assert settings.spool.dir == tmp_path / "spool"


def test_comma_lists_are_split_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_ALLOWED_CALLING_AETS", " CT_ROOM_1, MR 2 ,,PACS")
    monkeypatch.setenv("TRIAGE_ROUTE_MODALITIES", "CT,MR")
    monkeypatch.setenv("TRIAGE_ROUTE_BODY_PARTS", "HEAD")
    settings = load_settings()
    assert settings.dicom.allowed_calling_aets == ["CT_ROOM_1", "MR 2", "PACS"]
    assert settings.routing.modalities == ["CT", "MR"]
    assert settings.routing.body_parts == ["HEAD"]


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

    assert settings.dicom.ae_title == "TRIAGE_TOML"
    assert settings.completion.quiet_seconds == 1.5
    assert settings.dicom.allowed_calling_aets == ["CT1", "CT2"]
    assert settings.routing.body_parts == ["HEAD", "NECK"]
    assert settings.dicom.port == 5151, "the environment overrides the file"
    assert load_settings(dicom_port=6161).dicom.port == 6161, "arguments override both"


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
        assert get_settings() is first and first.dicom.port == 2000
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


def test_flat_names_fill_their_sections(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRIAGE_MAX_PDU", "0")
    monkeypatch.setenv("TRIAGE_DICOM_FAST_PATH", "false")
    monkeypatch.setenv("TRIAGE_THRESHOLDS", '{"ich": 0.35, "ischemia": 0.5}')
    monkeypatch.setenv("TRIAGE_ALLOWED_CALLING_AETS", "CT1,CT2")
    monkeypatch.setenv("TRIAGE_INFERENCE_BATCH_SIZE", "8")
    monkeypatch.setenv("TRIAGE_VISIBILITY_TIMEOUT", "1234")
    monkeypatch.setenv("TRIAGE_SHADOW_BUNDLE", str(tmp_path / "shadow"))
    settings = load_settings()
    assert settings.dicom.max_pdu == 0
    assert settings.dicom.fast_path is False
    assert settings.models.thresholds == {"ich": 0.35, "ischemia": 0.5}
    assert settings.dicom.allowed_calling_aets == ["CT1", "CT2"]
    assert settings.worker.batch_size == 8
    assert settings.broker.visibility_timeout == 1234.0
    assert settings.models.shadow_bundle == tmp_path / "shadow"


def test_every_variable_has_one_attribute_path() -> None:
    paths = [setting_path(env) for env, _, _ in settings_table()]
    # the 40 flat names of the former flat class, the receive path's three bounds, and the
    # web app's seven
    assert len(set(paths)) == len(paths) == 50
    assert setting_path("TRIAGE_DICOM_PORT") == "dicom.port"
    assert setting_path("TRIAGE_INFERENCE_BATCH_SIZE") == "worker.batch_size"
    assert setting_path("TRIAGE_VAR_DIR") == "var_dir"
    settings = load_settings()
    for path in paths:  # each documented variable names a real attribute
        section, _, name = path.rpartition(".")
        assert hasattr(getattr(settings, section) if section else settings, name), path


def test_nested_names_work_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_DICOM__PORT", "2104")
    monkeypatch.setenv("TRIAGE_WORKER__BATCH_SIZE", "4")
    monkeypatch.setenv("TRIAGE_ROUTING__MODALITIES", "CT, MR")
    settings = load_settings()
    assert settings.dicom.port == 2104
    assert settings.worker.batch_size == 4
    assert settings.routing.modalities == ["CT", "MR"]


def test_nested_wrong_value_still_names_the_flat_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_DICOM__PORT", "abc")
    with pytest.raises(SettingsError, match="TRIAGE_DICOM_PORT: "):
        load_settings()


def test_toml_file_accepts_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "triage.toml"
    config.write_text(
        "max_pdu = 65536\n[dicom]\nport = 4343\n[worker]\nbatch_size = 2\n"
        "[models.thresholds]\nich = 0.25\n"
    )
    monkeypatch.setenv("TRIAGE_CONFIG_FILE", str(config))
    monkeypatch.setenv("TRIAGE_INFERENCE_BATCH_SIZE", "3")
    settings = load_settings()
    assert settings.dicom.port == 4343
    assert settings.dicom.max_pdu == 65536, "a flat key beside a section in one file"
    assert settings.models.thresholds == {"ich": 0.25}
    assert settings.worker.batch_size == 3, "the flat variable overrides the file's section"


def test_unknown_key_in_a_section_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "triage.toml"
    config.write_text("[dicom]\nprot = 104\n")
    monkeypatch.setenv("TRIAGE_CONFIG_FILE", str(config))
    with pytest.raises(SettingsError, match="TRIAGE_DICOM__PROT"):
        load_settings()


def test_wrong_thresholds_json_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_THRESHOLDS", "{ich: 0.3")
    with pytest.raises(SettingsError, match="TRIAGE_THRESHOLDS: .*not a JSON object"):
        load_settings()


def test_visibility_timeout_must_exceed_task_time_limit() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(task_time_limit=900, visibility_timeout=900)
    assert "TRIAGE_VISIBILITY_TIMEOUT must exceed TRIAGE_TASK_TIME_LIMIT" in str(raised.value)


def test_spool_folders_follow_var_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path / "var"))
    settings = load_settings()
    assert settings.spool.dir == tmp_path / "var" / "spool"
    assert settings.spool.quarantine_dir == tmp_path / "var" / "quarantine"

    monkeypatch.setenv("TRIAGE_SPOOL_DIR", str(tmp_path / "fast-disk"))
    settings = load_settings()
    assert settings.spool.dir == tmp_path / "fast-disk", "an explicit folder wins"
    assert settings.spool.quarantine_dir == tmp_path / "var" / "quarantine"


DB_URL = "postgresql+psycopg://triage:db-s3cret@db.example:5432/triage"
BROKER_URL = "redis://:mq-s3cret@redis.example:6379/0"


def test_secret_urls_are_not_in_repr_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", DB_URL)
    monkeypatch.setenv("TRIAGE_BROKER_URL", BROKER_URL)
    settings = load_settings()
    for text in (repr(settings), str(settings), settings.model_dump_json(), str(settings.database)):
        assert "s3cret" not in text
    assert settings.database.url.get_secret_value() == DB_URL, "the accessor gives the real URL"


def test_cli_shows_values_in_use_with_passwords_masked(tmp_path: Path) -> None:
    env = {
        "TRIAGE_DATABASE_URL": DB_URL,
        "TRIAGE_BROKER_URL": BROKER_URL,
        "TRIAGE_DICOM_PORT": "2222",
        "TRIAGE_VAR_DIR": str(tmp_path),
    }
    result = CliRunner().invoke(main, ["settings"], env=env)
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()}
    assert lines["TRIAGE_DATABASE_URL"] == [
        "postgresql+psycopg://triage:***@db.example:5432/triage"
    ]
    assert lines["TRIAGE_BROKER_URL"] == ["redis://:***@redis.example:6379/0"]
    assert lines["TRIAGE_DICOM_PORT"] == ["2222"], "the value in use, not the default"
    assert lines["TRIAGE_SPOOL_DIR"] == [str(tmp_path / "spool")], "derived from VAR_DIR"


def test_cli_lists_defaults_on_request() -> None:
    result = CliRunner().invoke(main, ["settings", "--defaults"], env={"TRIAGE_DICOM_PORT": "2222"})
    assert result.exit_code == 0, result.output
    port = next(line for line in result.output.splitlines() if line.startswith("TRIAGE_DICOM_PORT"))
    assert port.split()[1] == "11112" and "C-STORE SCP port." in port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///var/triage.sqlite", "sqlite:///var/triage.sqlite"),
        ("postgresql+psycopg://u:p%40ss@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=x&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("filesystem://", "filesystem://"),
        ("amqp://u:p@[::1/x", "***"),
    ],
)
def test_mask_url_hides_only_the_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown
