"""What a result consists of, in the order it is sent."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage

from training.bundle import Bundle
from worker.reports import build_result_documents, write_documents
from worker.reports.headers import UNSTATED_DEIDENTIFICATION

from .conftest import ReadStudy, dciodvfy_errors, report_input


def test_items_are_sr_then_key_images_then_kos(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    docs = build_result_documents(report_input(read_study, demo_bundle))
    kinds = [kind for kind, _ in docs.items()]
    assert kinds == ["sr", "key-image", "key-image", "key-image", "kos"]
    assert [ds.SOPInstanceUID for _, ds in docs.items()][0] == docs.uids.sr_instance


def test_key_images_can_be_turned_off(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    docs = build_result_documents(report_input(read_study, demo_bundle), key_images=False)
    assert [kind for kind, _ in docs.items()] == ["sr"]


def test_sparse_latin1_deidentified_headers_still_give_valid_documents_and_stay_untouched(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    left_out = ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyTime")
    headers = []
    for header in read_study.headers:
        sparse = copy.deepcopy(header)
        for keyword in left_out:
            delattr(sparse, keyword)
        sparse.SpecificCharacterSet = "ISO_IR 100"
        sparse.PatientName = "Müller^Jürgen"
        del sparse.SOPClassUID  # only in the file meta, as some archives write it
        sparse.PatientIdentityRemoved = "YES"  # and no method named
        sparse.SliceThickness = None  # empty geometry: no image-library entry
        headers.append(sparse)
    docs = build_result_documents(report_input(read_study, demo_bundle, headers=tuple(headers)))
    for path in write_documents(docs, tmp_path):
        assert dciodvfy_errors(path) == [], path.name
        written = pydicom.dcmread(path)
        assert written.PatientName == "Müller^Jürgen"
        assert written.StudyID == "" and written.PatientID == headers[0].PatientID
    assert docs.sr.DeidentificationMethod == UNSTATED_DEIDENTIFICATION
    assert all(keyword not in headers[0] for keyword in (*left_out, "SOPClassUID"))
    evidence = docs.sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert {i.ReferencedSOPClassUID for i in evidence.ReferencedSOPSequence} == {CTImageStorage}


def test_a_source_study_uid_that_is_no_uid_is_refused(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    headers = [copy.deepcopy(h) for h in read_study.headers]
    for header in headers:
        with pytest.warns(UserWarning, match="Invalid value for VR UI"):
            header.StudyInstanceUID = "ID_8881b1c4b1"  # as some research exports have it
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        report_input(read_study, demo_bundle, headers=tuple(headers))
