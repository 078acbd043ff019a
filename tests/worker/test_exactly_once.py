"""Exactly once through a real broker: a killed worker and a restarted Redis lose nothing.

The worker is a real ``triage worker`` process; Redis is a private ``redis-server``;
studies arrive through the real listener from DCMTK storescu.
"""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from sqlalchemy import select

from db.engine import make_engine, make_session_factory
from db.models import Job, Prediction, Study
from db.vocabulary import StudyState
from listener.service import start_listener

from .conftest import worker_process

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _sessions(settings):
    return make_session_factory(make_engine(settings.database.url.get_secret_value()))


def _state(settings, study_uid):
    with _sessions(settings)() as session:
        study = session.scalars(
            select(Study).where(Study.study_instance_uid == study_uid)
        ).one_or_none()
        return study.state if study else None


def _predictions(settings):
    with _sessions(settings)() as session:
        return list(session.scalars(select(Prediction)))


@pytest.fixture
def broker_settings(make_settings, database_url, private_redis, tiny_bundle):
    return make_settings(
        database_url=database_url,
        broker_url=private_redis.url,
        model_bundle=tiny_bundle,
        reconcile_after_seconds=1.0,
        reconcile_interval_seconds=0.5,
        task_time_limit=60.0,
        visibility_timeout=90.0,
    )


def test_worker_process_killed_mid_inference_still_gives_one_prediction(
    broker_settings, lesion_studies, send_study, poll, tmp_path
):
    settings = broker_settings
    study = lesion_studies("intraparenchymal", seed=11, slices=96)
    service = start_listener(settings, port=0)
    try:
        with worker_process(settings, pool="prefork", log=tmp_path / "worker.log") as worker:

            def pool_children():
                try:
                    return psutil.Process(worker.pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    return []

            poll(pool_children, timeout=60, what="worker pool process")
            send_study(service.port, study.files)
            poll(
                lambda: _state(settings, study.study_uid) == StudyState.PROCESSING,
                timeout=60,
                interval=0.01,
                what="inference to start",
            )
            victims = pool_children()
            for child in victims:
                os.kill(child.pid, signal.SIGKILL)
            poll(lambda: _predictions(settings), timeout=120, what="the prediction after the kill")
            log = (tmp_path / "worker.log").read_text()
    finally:
        service.stop()

    assert victims, "a pool process was killed"
    assert "WorkerLostError" in log or "SIGKILL" in log or "signal 9" in log
    predictions = _predictions(settings)
    assert len(predictions) == 1
    with _sessions(settings)() as session:
        [job] = session.scalars(select(Job))
        assert job.attempts == 2  # the killed delivery and the one that finished
    assert _state(settings, study.study_uid) == StudyState.PREDICTED


def test_redis_restart_with_queued_studies_loses_none(
    broker_settings, lesion_studies, send_study, poll, private_redis, tmp_path
):
    settings = broker_settings
    studies = [
        lesion_studies(lesion, seed=20 + i, slices=16)
        for i, lesion in enumerate(["none", "epidural", "ischemic"])
    ]
    service = start_listener(settings, port=0)
    try:
        for study in studies:
            send_study(service.port, study.files)
        poll(
            lambda: all(_state(settings, s.study_uid) == StudyState.QUEUED for s in studies),
            timeout=30,
            what="all studies queued in Redis",
        )
    finally:
        service.stop()
    private_redis.restart()  # no persistence: every queued message is gone

    with worker_process(settings, pool="solo", reconcile=True, log=tmp_path / "worker.log"):
        poll(
            lambda: len(_predictions(settings)) == len(studies),
            timeout=120,
            what="a prediction for every study",
        )
    predictions = _predictions(settings)
    assert len(predictions) == 3
    assert len({p.study_id for p in predictions}) == 3
    assert all(_state(settings, s.study_uid) == StudyState.PREDICTED for s in studies)


@pytest.mark.postgres
def test_database_briefly_down_is_retried_with_backoff(
    make_settings, private_redis, tiny_bundle, lesion_studies, send_study, poll, tmp_path
):
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from db.migrate import upgrade_to_head
    from tests.conftest import (
        POSTGRES_ADMIN_URL,
        create_postgres_database,
        drop_postgres_database,
    )
    from triage.queue import StudyQueue, make_celery

    url = create_postgres_database()
    name = make_url(url).database
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def connections(allowed: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )

    try:
        upgrade_to_head(url)
        settings = make_settings(
            database_url=url, broker_url=private_redis.url, model_bundle=tiny_bundle
        )
        study = lesion_studies("subarachnoid", seed=31, slices=16)
        completed: list[tuple[int, str, int]] = []
        service = start_listener(
            settings, port=0, dispatcher=lambda *a: completed.append(a) or "held"
        )
        try:
            send_study(service.port, study.files)
            poll(lambda: completed, what="completion")
        finally:
            service.stop()
        with worker_process(settings, log=tmp_path / "worker.log"):
            poll(
                lambda: b"ready" in (tmp_path / "worker.log").read_bytes(),
                timeout=60,
                what="worker ready",
            )
            connections(False)
            StudyQueue(make_celery(settings))(*completed[0])
            poll(
                lambda: b"Retry in" in (tmp_path / "worker.log").read_bytes(),
                timeout=60,
                what="the task to retry",
            )
            connections(True)
            poll(lambda: _predictions(settings), timeout=90, what="the prediction after the outage")
        assert len(_predictions(settings)) == 1
    finally:
        admin.dispose()
        connections_restore = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with connections_restore.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        connections_restore.dispose()
        drop_postgres_database(url)
