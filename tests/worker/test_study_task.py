"""The study task on a real received study: idempotent, drops bad slices, fails cleanly, caps
attempts, shadows.

Studies arrive through the real listener (DCMTK storescu); the task runs in-process here so
each behaviour is checked directly. Broker-level behaviour is in test_exactly_once.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from db.models import AuditEvent, Job, Prediction, Study
from db.vocabulary import AuditEventType, StudyState, TaskOutcome
from listener.service import start_listener
from triage.settings import Settings
from worker.runtime import WorkerRuntime
from worker.tasks import StudyRun, run_study


def _receive(settings: Settings, files: list[Path], poll: Callable, send: Callable) -> int:
    """Send a study through the listener; return its database id once complete."""
    queued: list[int] = []
    service = start_listener(
        settings, dispatcher=lambda sid, uid, v: queued.append(sid) or "t", port=0
    )
    try:
        send(service.port, files)
        poll(lambda: queued, what="study completion")
    finally:
        service.stop()
    return queued[0]


@pytest.fixture
def received(make_settings, database_url, tiny_bundle, lesion_studies, poll, send_study):
    settings = make_settings(database_url=database_url, model_bundle=tiny_bundle)
    study = lesion_studies("subdural")
    study_id = _receive(settings, study.files, poll, send_study)
    return settings, study_id, study


def _predictions(runtime: WorkerRuntime) -> list[Prediction]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Prediction)))


def test_running_twice_stores_one_prediction_with_its_bundle(received):
    settings, study_id, study = received
    runtime = WorkerRuntime.from_settings(settings)
    assert run_study(study_id, 1, runtime=runtime).outcome is TaskOutcome.PREDICTED
    assert run_study(study_id, 1, runtime=runtime).outcome is TaskOutcome.ALREADY_PREDICTED

    [prediction] = _predictions(runtime)
    bundle = runtime.bundle(settings.models.bundle)
    assert prediction.bundle_sha256 == bundle.sha256
    assert (prediction.bundle_name, prediction.bundle_version) == ("tiny-untrained", "1")
    assert prediction.synthetic_demo is True
    assert set(prediction.probabilities) == set(bundle.class_names)
    assert len(prediction.slice_scores) == len(study.files)
    assert prediction.priority in ("critical", "urgent", "routine")
    assert prediction.timings["slices"] == len(study.files)
    with runtime.sessions() as session:
        assert session.get(Study, study_id).state == StudyState.PREDICTED
        events = [e.event_type for e in session.scalars(select(AuditEvent))]
    assert AuditEventType.INFERENCE_STARTED in events
    assert events.count(AuditEventType.PREDICTION_STORED) == 1


def test_slice_scores_are_in_patient_axis_order(received):
    settings, study_id, _ = received
    runtime = WorkerRuntime.from_settings(settings)
    run_study(study_id, 1, runtime=runtime)
    [prediction] = _predictions(runtime)
    numbers = [s["instance_number"] for s in prediction.slice_scores]
    assert numbers == sorted(numbers) or numbers == sorted(numbers, reverse=True)


def test_undecodable_study_fails_with_its_reason(received):
    settings, study_id, _ = received
    for path in settings.spool.dir.rglob("*.dcm"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])  # pixel data cut short
    runtime = WorkerRuntime.from_settings(settings)
    outcome = run_study(study_id, 1, runtime=runtime)
    assert outcome.outcome is TaskOutcome.FAILED
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        assert study.state == StudyState.FAILED
        assert "cannot decode" in study.state_reason
        events = [e.event_type for e in session.scalars(select(AuditEvent))]
    assert AuditEventType.INFERENCE_FAILED in events
    assert _predictions(runtime) == []


def _truncate_pixel_data(settings: Settings, files: list[Path]) -> list[str]:
    """Cut the Pixel Data of these spooled slices in half (a valid file, undecodable)."""
    uids = []
    for original in files:
        [spooled] = settings.spool.dir.rglob(original.name)
        ds = dcmread(spooled)
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        ds.save_as(spooled)
        uids.append(str(ds.SOPInstanceUID))
    return uids


def _state(runtime: WorkerRuntime, study_id: int) -> tuple[StudyState, str | None]:
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        return study.state, study.state_reason


def _audit(runtime: WorkerRuntime, event_type: AuditEventType) -> list[AuditEvent]:
    with runtime.sessions() as session:
        return [e for e in session.scalars(select(AuditEvent)) if e.event_type == event_type]


def test_one_truncated_slice_is_dropped_and_the_study_still_predicted(received):
    settings, study_id, study = received
    [bad_uid] = _truncate_pixel_data(settings, study.files[10:11])
    runtime = WorkerRuntime.from_settings(settings)
    assert run_study(study_id, 1, runtime=runtime).outcome == TaskOutcome.PREDICTED

    [prediction] = _predictions(runtime)
    assert len(prediction.slice_scores) == len(study.files) - 1
    assert bad_uid not in {s["sop_instance_uid"] for s in prediction.slice_scores}
    [dropped] = prediction.timings["dropped_slices"]
    assert dropped["sop_instance_uid"] == bad_uid
    assert "less than expected" in dropped["reason"]
    assert prediction.timings["slices"] == len(study.files) - 1
    assert _state(runtime, study_id) == (StudyState.PREDICTED, None)
    [stored] = _audit(runtime, AuditEventType.PREDICTION_STORED)
    assert [d["sop_instance_uid"] for d in stored.detail["dropped_slices"]] == [bad_uid]


def test_study_with_most_slices_broken_is_not_assessed_naming_the_count(received):
    settings, study_id, study = received
    bad = _truncate_pixel_data(settings, study.files[::2])
    runtime = WorkerRuntime.from_settings(settings)
    run = run_study(study_id, 1, runtime=runtime)
    assert run.outcome == TaskOutcome.FAILED
    assert run.detail is not None and run.detail.startswith("not assessed")
    state, reason = _state(runtime, study_id)
    assert state == StudyState.FAILED
    assert reason.startswith("not assessed: ")
    assert f"cannot decode {len(bad)} of {len(study.files)} slices" in reason
    [failed] = _audit(runtime, AuditEventType.INFERENCE_FAILED)
    assert failed.detail["dropped_count"] == len(bad)
    assert {d["sop_instance_uid"] for d in failed.detail["dropped_slices"]} <= set(bad)
    assert _predictions(runtime) == []


def test_poison_study_fails_after_the_attempt_cap(
    received, make_settings, database_url, tiny_bundle
):
    settings, study_id, _ = received
    capped = make_settings(database_url=database_url, model_bundle=tiny_bundle, max_attempts=2)
    runtime = WorkerRuntime.from_settings(capped)
    bundle = runtime.bundle(capped.models.bundle)
    with runtime.sessions() as session:  # two deliveries already died mid-inference
        session.add(
            Job(study_id=study_id, study_version=1, bundle_sha256=bundle.sha256, attempts=2)
        )
        session.commit()
    assert run_study(study_id, 1, runtime=runtime) == StudyRun(
        TaskOutcome.FAILED, "too many attempts"
    )
    with runtime.sessions() as session:
        study = session.get(Study, study_id)
        assert study.state == StudyState.FAILED
        assert "gave up after 2 attempts" in study.state_reason
    assert _predictions(runtime) == []


def test_stale_version_is_left_to_the_newer_task(received):
    settings, study_id, _ = received
    runtime = WorkerRuntime.from_settings(settings)
    with runtime.sessions() as session:
        session.get(Study, study_id).version = 2
        session.commit()
    assert run_study(study_id, 1, runtime=runtime).outcome is TaskOutcome.STALE_VERSION
    assert _predictions(runtime) == []


def test_shadow_bundle_is_stored_marked_shadow(
    received, make_settings, database_url, tiny_bundle, second_tiny_bundle
):
    settings, study_id, _ = received
    with_shadow = make_settings(
        database_url=database_url, model_bundle=tiny_bundle, shadow_bundle=second_tiny_bundle
    )
    runtime = WorkerRuntime.from_settings(with_shadow)
    assert run_study(study_id, 1, runtime=runtime).outcome is TaskOutcome.PREDICTED
    predictions = {p.bundle_name: p for p in _predictions(runtime)}
    assert set(predictions) == {"tiny-untrained", "tiny-shadow"}
    assert predictions["tiny-shadow"].shadow is True
    assert predictions["tiny-untrained"].shadow is False
    assert predictions["tiny-shadow"].bundle_sha256 != predictions["tiny-untrained"].bundle_sha256


def test_audit_predictions_names_the_bundle_and_is_itself_audited(received, monkeypatch):
    import json

    from click.testing import CliRunner

    from triage.cli import main
    from triage.settings import get_settings

    settings, study_id, study = received
    runtime = WorkerRuntime.from_settings(settings)
    run_study(study_id, 1, runtime=runtime)
    monkeypatch.setenv("TRIAGE_DATABASE_URL", settings.database.url.get_secret_value())
    monkeypatch.setenv("TRIAGE_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["audit", "predictions", "--format", "json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    bundle = runtime.bundle(settings.models.bundle)
    assert row["study_instance_uid"] == study.study_uid
    assert row["bundle_sha256"] == bundle.sha256
    assert row["synthetic_demo"] is True
    assert (row["assessed"], row["in_domain"], row["reasons"]) == (True, True, [])
    assert isinstance(row["domain_score"], float)
    with runtime.sessions() as session:
        viewed = [
            e
            for e in session.scalars(select(AuditEvent))
            if e.event_type == AuditEventType.RESULT_VIEWED
        ]
    assert len(viewed) == 1 and viewed[0].actor.startswith("cli:")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("tool", "args", "proposal"),
    [("dcmcjpls", (), "-xt"), ("dcmcrle", (), "-xr"), ("dcmcjpeg", ("+e1",), "-xs")],
)
def test_compressed_study_is_decoded_and_predicted(
    tool,
    args,
    proposal,
    make_settings,
    database_url,
    tiny_bundle,
    lesion_studies,
    poll,
    send_study,
    tmp_path,
):
    import subprocess

    study = lesion_studies("epidural", seed=5, slices=12)
    compressed = []
    for path in study.files:
        target = tmp_path / path.name
        subprocess.run([tool, *args, str(path), str(target)], check=True, capture_output=True)
        compressed.append(target)
    settings = make_settings(database_url=database_url, model_bundle=tiny_bundle)
    study_id = _receive(
        settings, compressed, poll, lambda port, files: send_study(port, files, (proposal,))
    )
    runtime = WorkerRuntime.from_settings(settings)
    assert run_study(study_id, 1, runtime=runtime).outcome is TaskOutcome.PREDICTED
    [prediction] = _predictions(runtime)
    assert len(prediction.slice_scores) == 12


def test_contrast_study_is_not_assessed_and_audit_json_says_why(
    make_settings, database_url, tiny_bundle, poll, send_study, tmp_path, monkeypatch
):
    import json

    from click.testing import CliRunner

    from training.phantom import write_phantom_study
    from triage.cli import main
    from triage.settings import get_settings

    study = write_phantom_study(tmp_path / "contrast", slices=16, size=128, seed=61)
    for path in study.files:
        ds = dcmread(path)
        ds.ContrastBolusAgent = "IOMERON 350"
        ds.save_as(path)
    settings = make_settings(database_url=database_url, model_bundle=tiny_bundle)
    study_id = _receive(settings, study.files, poll, send_study)
    runtime = WorkerRuntime.from_settings(settings)
    run = run_study(study_id, 1, runtime=runtime)
    assert run.outcome is TaskOutcome.NOT_ASSESSED
    assert "contrast-enhanced" in str(run)
    [prediction] = _predictions(runtime)
    assert prediction.priority == "not_assessed" and not any(prediction.flags.values())
    assert prediction.probabilities == {}

    monkeypatch.setenv("TRIAGE_DATABASE_URL", settings.database.url.get_secret_value())
    monkeypatch.setenv("TRIAGE_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["audit", "predictions", "--format", "json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert row["assessed"] is False
    assert isinstance(row["in_domain"], bool)
    assert isinstance(row["domain_score"], float)
    assert row["reasons"][0] == "not assessed: contrast-enhanced (ContrastBolusAgent IOMERON 350)"
    assert row["priority"] != "routine"
