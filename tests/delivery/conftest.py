"""Fixtures for delivery tests: a migrated database holding one stored result, a runner.

The result is a real prediction row of a real study, its documents are real DICOM files in
a spooled result folder, and the outbox rows are queued by :func:`db.outbox.enqueue` as the
worker queues them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from db import outbox
from db.engine import make_engine, make_session_factory
from db.models import Delivery, Prediction, Study
from db.vocabulary import Priority, StudyState
from triage.settings import Settings
from worker.delivery.runner import DeliveryRunner

DATA = Path(__file__).resolve().parents[1] / "data"
STUDY_UID = "1.2.826.0.1.3680043.8.498.4242"


@dataclass
class Outbox:
    """A database with one predicted study and what it takes to queue and send its result."""

    sessions: sessionmaker[Session]
    settings: Settings
    result_dir: Path
    prediction_id: int
    study_id: int

    def queue(self, *targets: tuple[str, str], version_of: int | None = None) -> list[int]:
        with self.sessions() as session:
            prediction = session.get(Prediction, version_of or self.prediction_id)
            assert prediction is not None
            rows = outbox.enqueue(
                session,
                prediction,
                [outbox.Target(channel, key) for channel, key in targets],
                result_dir=str(self.result_dir),
                document_uids={"sr": "1.2.826.0.1.3680043.8.498.77", "sr_series": "1.2.3.9"},
            )
            session.commit()
            return [row.id for row in rows]

    def new_version(self, priority: Priority) -> int:
        """Late images made version 2 of the study; its prediction (a new id) is stored."""
        with self.sessions() as session:
            first = session.get(Prediction, self.prediction_id)
            study = session.get(Study, self.study_id)
            assert first is not None and study is not None
            study.version = 2
            study.state = StudyState.PREDICTED
            second = Prediction(
                study_id=self.study_id,
                study_version=2,
                series_instance_uid=first.series_instance_uid,
                bundle_name=first.bundle_name,
                bundle_version=first.bundle_version,
                bundle_sha256=first.bundle_sha256,
                synthetic_demo=first.synthetic_demo,
                probabilities={**first.probabilities, "subdural": 0.31},
                flags={**first.flags, "subdural": False, "any": False},
                thresholds=first.thresholds,
                priority=priority,
                slice_scores=[],
                timings={},
            )
            session.add(second)
            session.commit()
            return second.id

    def rows(self) -> list[Delivery]:
        with self.sessions() as session:
            return list(session.query(Delivery).order_by(Delivery.id))

    def study_state(self) -> str:
        with self.sessions() as session:
            study = session.get(Study, self.study_id)
            assert study is not None
            return study.state.value

    def runner(self, **overrides: Any) -> DeliveryRunner:
        return DeliveryRunner(self.sessions, self.settings.model_copy(update=overrides))


def write_documents(folder: Path, count: int = 2) -> list[str]:
    """Real DICOM files with fixed UIDs standing in for a result's documents."""
    folder.mkdir(parents=True, exist_ok=True)
    uids = []
    for index in range(count):
        ds = dcmread(DATA / "ct_head_16x16.dcm")
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.4243"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.4244.{index + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"doc-{index}.dcm")
        uids.append(str(ds.SOPInstanceUID))
    return uids


@pytest.fixture
def make_outbox(
    database_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> Callable[..., Outbox]:
    """``make_outbox(**settings)``: a stored, predicted result ready to be queued."""

    def build(**overrides: Any) -> Outbox:
        values: dict[str, Any] = {
            "database_url": database_url,
            "delivery_ack_timeout": 3.0,
            "delivery_backoff_seconds": 0.2,
            "delivery_backoff_max_seconds": 0.5,
            "delivery_max_attempts": 4,
        }
        values.update(overrides)
        settings = make_settings(**values)
        sessions = make_session_factory(make_engine(database_url))
        result_dir = tmp_path / "spool" / "results" / STUDY_UID / "v1-0123456789ab"
        write_documents(result_dir)
        with sessions() as session:
            study = Study(
                study_instance_uid=STUDY_UID or generate_uid(),
                state=StudyState.PREDICTED,
                version=1,
                accession_number="ACC0001",
                patient_id="PID-77",
            )
            session.add(study)
            session.flush()
            prediction = Prediction(
                study_id=study.id,
                study_version=1,
                series_instance_uid="1.2.3.4",
                bundle_name="demo",
                bundle_version="0.3.0",
                bundle_sha256="0123456789ab" + "c" * 52,
                synthetic_demo=True,
                probabilities={"any": 0.91, "subdural": 0.88, "ischemic": 0.03},
                flags={"any": True, "subdural": True, "ischemic": False},
                thresholds={"any": 0.5, "subdural": 0.5, "ischemic": 0.5},
                priority=Priority.CRITICAL,
                slice_scores=[],
                timings={},
            )
            session.add(prediction)
            session.commit()
            return Outbox(sessions, settings, result_dir, prediction.id, study.id)

    return build
