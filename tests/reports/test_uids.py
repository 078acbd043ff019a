"""Result UIDs are a function of the prediction key and destination kind, nothing else."""

from __future__ import annotations

import dataclasses

import pytest

from training.bundle import Bundle
from triage.uids import is_valid_uid
from worker.reports import build_result_documents, result_uids
from worker.reports.writing import part10_bytes

from .conftest import ReadStudy, report_input

STUDY = "1.2.826.0.1.3680043.8.498.1"
SHA = "0" * 64


def _all(uids) -> list[str]:  # type: ignore[no-untyped-def]
    return [uids.sr_series, uids.sr_instance, uids.sc_series, uids.kos_series, uids.kos_instance]


def test_same_key_gives_the_same_uids() -> None:
    assert result_uids(STUDY, 1, SHA, "dicom") == result_uids(STUDY, 1, SHA, "dicom")
    assert result_uids(STUDY, 1, SHA, "dicom").sc_instance(2) == result_uids(
        STUDY, 1, SHA, "dicom"
    ).sc_instance(2)


@pytest.mark.parametrize(
    "other",
    [
        (STUDY, 2, SHA, "dicom"),
        (STUDY, 1, "1" * 64, "dicom"),
        (STUDY, 1, SHA, "ups"),
        (STUDY + ".2", 1, SHA, "dicom"),
    ],
    ids=["version", "bundle", "destination kind", "study"],
)
def test_any_part_of_the_key_changes_every_uid(other: tuple[str, int, str, str]) -> None:
    first, second = result_uids(STUDY, 1, SHA, "dicom"), result_uids(*other)
    assert set(_all(first)).isdisjoint(_all(second))
    assert first.sc_instance(0) != second.sc_instance(0)


def test_uids_are_valid_and_distinct() -> None:
    uids = result_uids(STUDY, 3, SHA, "dicom")
    every = [*_all(uids), *(uids.sc_instance(i) for i in range(5))]
    assert all(is_valid_uid(uid) for uid in every)
    assert len(set(every)) == len(every)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((STUDY, 0, SHA, "dicom"), "study_version"),
        ((STUDY, 1, " ", "dicom"), "bundle_sha256"),
        ((STUDY, 1, SHA, ""), "destination_kind"),
    ],
)
def test_a_bad_key_is_refused_naming_the_argument(
    args: tuple[str, int, str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        result_uids(*args)


def test_two_builds_of_one_input_are_the_same_files(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    inp = report_input(read_study, demo_bundle)
    first, second = build_result_documents(inp), build_result_documents(inp)
    assert [part10_bytes(ds) for _, ds in first.items()] == [
        part10_bytes(ds) for _, ds in second.items()
    ]


def test_documents_for_another_destination_kind_or_version_have_other_uids(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    inp = report_input(read_study, demo_bundle)
    base = build_result_documents(inp)
    for changed in (
        dataclasses.replace(inp, destination_kind="orthanc"),
        dataclasses.replace(inp, study_version=2),
    ):
        other = build_result_documents(changed)
        mine = {ds.SOPInstanceUID for _, ds in base.items()}
        theirs = {ds.SOPInstanceUID for _, ds in other.items()}
        assert mine.isdisjoint(theirs)
        assert base.sr.SeriesInstanceUID != other.sr.SeriesInstanceUID
