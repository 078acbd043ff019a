"""A report input is made from a stored prediction row, and refuses what it cannot report."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from db.models import Prediction
from db.vocabulary import Priority
from training.bundle import Bundle
from worker.reports import build_result_documents, report_input_from_prediction

from .conftest import ReadStudy, report_input


def _row(read: ReadStudy, bundle: Bundle, **changes: object) -> Prediction:
    fields: dict[str, object] = {
        "study_id": 1,
        "study_version": 3,
        "series_instance_uid": read.phantom.series_uid,
        "bundle_name": bundle.name,
        "bundle_version": bundle.version,
        "bundle_sha256": bundle.sha256,
        "synthetic_demo": bundle.synthetic_demo,
        "probabilities": read.result.study_probabilities,
        "flags": read.verdict.flags,
        "thresholds": read.verdict.thresholds,
        "priority": read.verdict.priority,
        "slice_scores": read.result.slice_scores,
        "timings": {},
        "assessed": True,
        "in_domain": True,
        "domain_score": 0.8,
        "reasons": [],
        "created_at": datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
    }
    fields.update(changes)
    return Prediction(**fields)


def test_input_from_a_prediction_row_builds_the_same_sr_as_from_its_parts(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    row = _row(read_study, demo_bundle)
    inp = report_input_from_prediction(
        row,
        study_instance_uid=read_study.phantom.study_uid,
        headers=read_study.headers,
        class_names=demo_bundle.class_names,
    )
    assert inp.study_version == 3 and inp.priority == "critical"
    direct = report_input(
        read_study,
        demo_bundle,
        study_version=3,
        domain_score=0.8,
        created_at=row.created_at,
        key_images=(),
    )
    assert build_result_documents(inp).sr == build_result_documents(direct).sr


def test_headers_of_another_study_are_refused(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="study_instance_uid"):
        report_input_from_prediction(
            _row(read_study, demo_bundle),
            study_instance_uid="1.2.3.4",
            headers=read_study.headers,
            class_names=demo_bundle.class_names,
        )


def test_a_study_not_assessed_must_say_why(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="reasons"):
        report_input(read_study, demo_bundle, assessed=False, priority=Priority.NOT_ASSESSED)


def test_headers_must_include_the_series_read(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="series read"):
        report_input(read_study, demo_bundle, series_instance_uid="1.2.3.4.5")


def test_key_image_pixels_must_be_rgb_bytes(read_study: ReadStudy) -> None:
    key = read_study.key_images[0]
    with pytest.raises(ValueError, match="pixels"):
        dataclasses.replace(key, pixels=key.pixels[..., 0])
