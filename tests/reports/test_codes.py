"""Every bundle class has a finding concept, and the concept names its class again."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd

from training.bundle import Bundle
from training.classes import CLASS_NAMES
from worker.reports import build_result_documents
from worker.reports import codes as rc
from worker.reports.writing import write_dataset

from .conftest import ReadStudy, dciodvfy_errors, report_input


def test_every_known_class_and_an_unknown_one_map_back_to_their_name() -> None:
    for name in (*CLASS_NAMES, "hydrocephalus", "midline_shift_over_five_millimetres"):
        assert rc.class_of(rc.finding(name)) == name
    assert rc.finding("any") == hd.sr.CodedConcept(
        "1386000", "SCT", "Intracranial hemorrhage (disorder)"
    )


def test_a_bundle_class_without_a_code_is_still_reported_validly(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    extra = "midline_shift_over_five_millimetres"
    inp = report_input(
        read_study,
        demo_bundle,
        class_names=(*demo_bundle.class_names, extra),
        probabilities={**read_study.result.study_probabilities, extra: 0.25},
        flags={**read_study.verdict.flags, extra: False},
        thresholds={**read_study.verdict.thresholds, extra: 0.5},
    )
    path = write_dataset(build_result_documents(inp).sr, tmp_path)
    assert dciodvfy_errors(path) == []
    [group] = hd.sr.srread(path).content.get_image_measurement_groups(
        finding_type=rc.finding(extra)
    )
    [probability] = group.get_measurements(name=rc.PROBABILITY)
    assert probability.value == 0.25
