"""Key images are valid Secondary Captures in the source study, labelled for what they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from training.bundle import Bundle
from worker.reports import build_result_documents
from worker.reports.writing import write_documents

from .conftest import ReadStudy, dciodvfy_errors, report_input


@pytest.fixture(scope="module")
def sc_files(
    tmp_path_factory: pytest.TempPathFactory, read_study: ReadStudy, demo_bundle: Bundle
) -> list[Path]:
    docs = build_result_documents(report_input(read_study, demo_bundle))
    return write_documents(docs.key_images, tmp_path_factory.mktemp("sc"))


def test_every_key_image_has_no_dciodvfy_errors(sc_files: list[Path]) -> None:
    assert len(sc_files) == 3
    for path in sc_files:
        assert dciodvfy_errors(path) == [], path.name


def test_key_images_are_one_new_series_in_the_source_study(
    sc_files: list[Path], read_study: ReadStudy
) -> None:
    images = [pydicom.dcmread(path) for path in sc_files]
    source = read_study.headers[0]
    assert {ds.StudyInstanceUID for ds in images} == {source.StudyInstanceUID}
    assert {ds.PatientID for ds in images} == {source.PatientID}
    [series] = {ds.SeriesInstanceUID for ds in images}
    assert series != source.SeriesInstanceUID
    assert sorted(int(ds.InstanceNumber) for ds in images) == [1, 2, 3]


def test_key_image_pixels_are_the_rendered_rgb_and_name_their_source_slice(
    sc_files: list[Path], read_study: ReadStudy
) -> None:
    by_number = {int(ds.InstanceNumber): ds for ds in map(pydicom.dcmread, sc_files)}
    for index, key in enumerate(read_study.key_images):
        ds = by_number[index + 1]
        assert ds.PhotometricInterpretation == "RGB"
        assert np.array_equal(ds.pixel_array, key.pixels)
        [ref] = ds.SourceImageSequence
        assert ref.ReferencedSOPInstanceUID == key.source_sop_instance_uid


def test_key_images_flag_burned_in_text_and_say_triage_aid(
    sc_files: list[Path], demo_bundle: Bundle
) -> None:
    for ds in map(pydicom.dcmread, sc_files):
        assert ds.BurnedInAnnotation == "YES"
        assert "not a diagnosis" in ds.ImageComments
        assert demo_bundle.sha256 in ds.ImageComments
        assert demo_bundle.disclaimer in ds.ImageComments  # "synthetic demo — not for clinical use"
        assert ds.ImageType[:2] == ["DERIVED", "SECONDARY"]


def test_unannotated_key_images_say_no_burned_in_text(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    import dataclasses

    plain = tuple(dataclasses.replace(k, annotated=False) for k in read_study.key_images)
    docs = build_result_documents(report_input(read_study, demo_bundle, key_images=plain))
    assert {ds.BurnedInAnnotation for ds in docs.key_images} == {"NO"}
