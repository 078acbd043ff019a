"""A phantom study sent by DCMTK storescu ends with one prediction naming its lesion.

The whole real path: listener -> broker -> ``triage worker`` process -> demo bundle ->
database, once on the embedded defaults (SQLite, file-system transport) and once on the
production pair (PostgreSQL, Redis).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_to_head
from db.models import Prediction
from listener.service import start_listener
from tests.conftest import create_postgres_database, drop_postgres_database

from .conftest import worker_process

DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "worker" / "bundles" / "demo"
SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("postgres-redis", marks=[pytest.mark.redis, pytest.mark.postgres]),
    ]
)
def pipeline_settings(request, make_settings):
    if request.param == "embedded":
        yield make_settings(model_bundle=DEMO_BUNDLE)
        return
    redis = request.getfixturevalue("private_redis")
    url = create_postgres_database()
    try:
        upgrade_to_head(url)
        yield make_settings(model_bundle=DEMO_BUNDLE, broker_url=redis.url, database_url=url)
    finally:
        drop_postgres_database(url)


@pytest.mark.parametrize("lesion", ["subdural", "ischemic"])
def test_sent_study_gets_one_prediction_flagging_its_lesion(
    pipeline_settings, lesion, lesion_studies, send_study, poll, tmp_path
):
    settings = pipeline_settings
    study = lesion_studies(lesion, seed=41, slices=32)
    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))

    def stored() -> list[Prediction]:
        with sessions() as session:
            return list(session.scalars(select(Prediction)))

    service = start_listener(settings, port=0)
    try:
        with worker_process(settings, log=tmp_path / "worker.log"):
            send_study(service.port, study.files)
            poll(stored, timeout=120, what="the prediction")
    finally:
        service.stop()

    [prediction] = stored()
    assert prediction.flags[lesion] is True, prediction.probabilities
    assert prediction.priority == "critical"
    assert prediction.synthetic_demo is True
    probabilities = prediction.probabilities
    if lesion in SUBTYPES:
        assert prediction.flags["any"] is True
        assert max(SUBTYPES, key=probabilities.__getitem__) == lesion
    else:
        assert probabilities["ischemic"] > probabilities["any"]
