"""What a result consists of, in the order it is sent."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom

from training.bundle import Bundle
from worker.reports import build_result_documents, write_documents

from .conftest import ReadStudy, dciodvfy_errors, report_input


def test_items_are_sr_then_key_images_then_kos(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    docs = build_result_documents(report_input(read_study, demo_bundle))
    kinds = [kind for kind, _ in docs.items()]
    assert kinds == ["sr", "key-image", "key-image", "key-image", "kos"]
    assert [ds.SOPInstanceUID for _, ds in docs.items()][0] == docs.uids.sr_instance


def test_key_images_can_be_turned_off(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    docs = build_result_documents(report_input(read_study, demo_bundle), key_images=False)
    assert [kind for kind, _ in docs.items()] == ["sr"]


def test_sparse_latin1_headers_still_give_valid_documents_and_stay_untouched(
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
        headers.append(sparse)
    docs = build_result_documents(report_input(read_study, demo_bundle, headers=tuple(headers)))
    for path in write_documents(docs, tmp_path):
        assert dciodvfy_errors(path) == [], path.name
        written = pydicom.dcmread(path)
        assert written.PatientName == "Müller^Jürgen"
        assert written.StudyID == "" and written.PatientID == headers[0].PatientID
    assert all(keyword not in headers[0] for keyword in left_out)
