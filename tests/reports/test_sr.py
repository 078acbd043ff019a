"""The SR of a real phantom read: valid for dicom3tools, readable by DCMTK, exact in highdicom."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import pytest
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from training.bundle import Bundle
from training.classes import DISCLAIMER_SYNTHETIC
from worker.reports import DocumentRef, build_result_documents, not_assessed_input
from worker.reports import codes as rc
from worker.reports.headers import PATIENT_STUDY_KEYWORDS
from worker.reports.identity import TRIAGE_AID_TEXT
from worker.reports.key_slices import top_slices_for_class
from worker.reports.sr import reported_probability
from worker.reports.writing import write_dataset

from .conftest import ReadStudy, bundle_identity, dciodvfy_errors, dsrdump, report_input

REASONS = (
    "contrast-enhanced series (not the plain CT the model was trained on)",
    "slice thickness 0.6 mm, outside 2.5-5.5 mm",
)


def _items(ds: Dataset, value_type: str) -> list[Dataset]:
    """Every content item of ``value_type`` anywhere in an SR tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == value_type:
            found.append(item)
        found.extend(_items(item, value_type))
    return found


def _text_values(ds: Dataset) -> list[str]:
    return [str(item.TextValue) for item in _items(ds, "TEXT")]


def _code_values(ds: Dataset) -> list[CodedConcept]:
    return [CodedConcept.from_dataset(i.ConceptCodeSequence[0]) for i in _items(ds, "CODE")]


def _num_names(ds: Dataset) -> list[CodedConcept]:
    return [CodedConcept.from_dataset(i.ConceptNameCodeSequence[0]) for i in _items(ds, "NUM")]


def _not_assessed(read: ReadStudy, bundle: Bundle, **changes: object):  # type: ignore[no-untyped-def]
    return not_assessed_input(
        headers=read.headers,
        study_version=1,
        reasons=REASONS,
        **bundle_identity(bundle),
        **changes,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def sr_file(
    tmp_path_factory: pytest.TempPathFactory, read_study: ReadStudy, demo_bundle: Bundle
) -> Path:
    docs = build_result_documents(report_input(read_study, demo_bundle))
    return write_dataset(docs.sr, tmp_path_factory.mktemp("sr"))


def test_the_phantom_read_has_present_and_absent_findings(read_study: ReadStudy) -> None:
    # Precondition of the round trip below: both answers occur.
    flags = read_study.verdict.flags
    assert flags["subdural"] is True, read_study.result.study_probabilities
    assert not all(flags.values())


def test_sr_has_no_dciodvfy_errors(sr_file: Path) -> None:
    assert dciodvfy_errors(sr_file) == []


def test_not_assessed_sr_has_no_dciodvfy_errors(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    docs = build_result_documents(_not_assessed(read_study, demo_bundle))
    assert dciodvfy_errors(write_dataset(docs.sr, tmp_path)) == []


def test_dsrdump_reads_the_sr_with_every_finding_and_the_triage_aid_text(
    sr_file: Path, demo_bundle: Bundle
) -> None:
    run = dsrdump(sr_file)
    assert run.returncode == 0, run.stderr
    assert [line for line in run.stderr.splitlines() if line[:2] in ("E:", "F:")] == []
    for name in demo_bundle.class_names:
        assert f'"{rc.finding(name).meaning}"' in run.stdout
    assert TRIAGE_AID_TEXT in run.stdout
    assert demo_bundle.sha256 in run.stdout
    assert "Comprehensive 3D SR" in run.stdout


def test_every_probability_and_present_absent_round_trip_through_highdicom(
    sr_file: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    sr = hd.sr.srread(sr_file)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    groups = sr.content.get_image_measurement_groups()
    read_back: dict[str, tuple[float, float, CodedConcept]] = {}
    for group in groups:
        assert group.finding_type is not None
        name = rc.class_of(group.finding_type)
        assert name is not None
        [probability] = group.get_measurements(name=rc.PROBABILITY)
        [threshold] = group.get_measurements(name=rc.OPERATING_THRESHOLD)
        [evaluation] = group.get_qualitative_evaluations(name=group.finding_type)
        assert probability.unit == rc.NO_UNITS
        read_back[name] = (probability.value, threshold.value, evaluation.value)
    assert set(read_back) == set(demo_bundle.class_names)
    for name, (probability, threshold, evaluation) in read_back.items():
        expected = read_study.result.study_probabilities[name]
        assert probability == reported_probability(expected)
        assert abs(probability - expected) <= 5e-7
        assert threshold == reported_probability(read_study.verdict.thresholds[name])
        flagged = read_study.verdict.flags[name]
        assert evaluation == (rc.PRESENT if flagged else rc.ABSENT), name


def test_sr_files_into_the_source_study_with_its_patient_and_study_modules(
    sr_file: Path, read_study: ReadStudy
) -> None:
    sr = hd.sr.srread(sr_file)
    source = read_study.headers[0]
    for keyword in ("StudyInstanceUID", *PATIENT_STUDY_KEYWORDS):
        assert sr[keyword].value == source[keyword].value, keyword
    assert sr.Modality == "SR"
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID


def test_sr_names_the_bundle_as_observer_and_algorithm(sr_file: Path, demo_bundle: Bundle) -> None:
    sr = hd.sr.srread(sr_file)
    texts = _text_values(sr)
    assert demo_bundle.name in texts  # device observer name and algorithm name
    assert demo_bundle.version in texts  # algorithm version
    assert f"weights sha256 {demo_bundle.sha256}" in texts  # algorithm parameter
    assert demo_bundle.sha256 in texts  # device observer serial number
    assert sr.DeviceSerialNumber == demo_bundle.sha256


def test_sr_references_the_series_read_and_each_present_findings_top_slices(
    sr_file: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    sr = hd.sr.srread(sr_file)
    evidence = sr.get_evidence()
    assert {series for _, series, _, _ in evidence} == {read_study.phantom.series_uid}
    expected = [
        key.sop_instance_uid
        for key in top_slices_for_class(read_study.result.slice_scores, "subdural", 3)
    ]
    [group] = sr.content.get_image_measurement_groups(finding_type=rc.finding("subdural"))
    assert [ref.referenced_sop_instance_uid for ref in group.source_images] == expected
    absent = [n for n in demo_bundle.class_names if not read_study.verdict.flags[n]]
    [quiet] = sr.content.get_image_measurement_groups(finding_type=rc.finding(absent[0]))
    assert quiet.source_images == []


def test_not_assessed_sr_states_the_reasons_and_claims_no_finding(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    docs = build_result_documents(_not_assessed(read_study, demo_bundle))
    assert docs.key_images == [] and docs.kos is None
    sr = hd.sr.srread(write_dataset(docs.sr, tmp_path))
    texts = _text_values(sr)
    for reason in REASONS:
        assert reason in texts
    codes_found = _code_values(sr)
    assert rc.NOT_ASSESSED in codes_found
    assert rc.PRESENT not in codes_found and rc.ABSENT not in codes_found
    assert rc.PROBABILITY not in _num_names(sr)
    assert "not_assessed" in texts


def test_out_of_domain_prediction_reports_no_probability_even_though_it_has_them(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    inp = report_input(
        read_study,
        demo_bundle,
        assessed=False,
        in_domain=False,
        domain_score=0.12,
        priority="not_assessed",
        reasons=("images lie outside the training domain (score 0.12)",),
    )
    sr = hd.sr.srread(write_dataset(build_result_documents(inp).sr, tmp_path))
    assert rc.PROBABILITY not in _num_names(sr)
    assert rc.PRESENT not in _code_values(sr)
    assert "images lie outside the training domain (score 0.12)" in _text_values(sr)


@pytest.mark.parametrize("synthetic", [True, False])
def test_demo_label_appears_exactly_when_a_synthetic_bundle_made_the_result(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle, synthetic: bool
) -> None:
    inp = report_input(read_study, demo_bundle, synthetic_demo=synthetic)
    docs = build_result_documents(inp)
    sr = hd.sr.srread(write_dataset(docs.sr, tmp_path))
    assert (DISCLAIMER_SYNTHETIC in _text_values(sr)) is synthetic
    assert sr.ContentQualification == ("RESEARCH" if synthetic else "PRODUCT")
    for image in docs.key_images:
        assert (DISCLAIMER_SYNTHETIC in image.ImageComments) is synthetic
    assert docs.kos is not None
    kos_texts = _text_values(docs.kos)
    assert any(DISCLAIMER_SYNTHETIC in text for text in kos_texts) is synthetic


def test_version_two_lists_the_earlier_sr_as_predecessor(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    first = build_result_documents(report_input(read_study, demo_bundle)).sr
    assert "PredecessorDocumentsSequence" not in first
    earlier = DocumentRef(
        str(first.StudyInstanceUID), str(first.SeriesInstanceUID), str(first.SOPInstanceUID)
    )
    second = build_result_documents(
        report_input(read_study, demo_bundle, study_version=2, predecessor=earlier)
    ).sr
    [study] = second.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == first.StudyInstanceUID
    [series] = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    [instance] = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert instance.ReferencedSOPClassUID == first.SOPClassUID
    assert second.SOPInstanceUID != first.SOPInstanceUID
    assert dciodvfy_errors(write_dataset(second, tmp_path)) == []


def test_a_key_slice_without_its_header_is_refused(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    top = top_slices_for_class(read_study.result.slice_scores, "subdural", 1)[0]
    headers = tuple(h for h in read_study.headers if h.SOPInstanceUID != top.sop_instance_uid)
    inp = report_input(read_study, demo_bundle, headers=headers, key_images=())
    with pytest.raises(ValueError, match="headers: key slice"):
        build_result_documents(inp)


def test_an_assessed_input_missing_a_class_is_refused(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    probabilities = dict(read_study.result.study_probabilities)
    del probabilities["ischemic"]
    with pytest.raises(ValueError, match="probabilities"):
        report_input(read_study, demo_bundle, probabilities=probabilities)


def test_sr_without_key_images_is_the_same_sr(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    inp = report_input(read_study, demo_bundle)
    with_images = build_result_documents(inp)
    without = build_result_documents(dataclasses.replace(inp, key_images=()))
    assert without.key_images == [] and without.kos is None
    assert with_images.sr.SOPInstanceUID == without.sr.SOPInstanceUID
