"""Result files are written whole or not at all, named by a validated SOP Instance UID."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from training.bundle import Bundle
from triage.uids import InvalidUIDError
from worker.reports import build_result_documents, write_documents
from worker.reports.writing import part10_bytes, write_dataset

from .conftest import ReadStudy, report_input


def test_every_document_lands_as_a_part10_file_named_by_its_uid(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    docs = build_result_documents(report_input(read_study, demo_bundle))
    paths = write_documents(docs, tmp_path / "out")
    assert [p.name for p in paths] == [f"{ds.SOPInstanceUID}.dcm" for _, ds in docs.items()]
    for path, (_, ds) in zip(paths, docs.items(), strict=True):
        assert path.read_bytes()[128:132] == b"DICM"
        assert pydicom.dcmread(path).SOPInstanceUID == ds.SOPInstanceUID
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_rewriting_a_document_replaces_it_with_the_same_bytes(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    sr = build_result_documents(report_input(read_study, demo_bundle)).sr
    first = write_dataset(sr, tmp_path)
    second = write_dataset(sr, tmp_path)
    assert first == second and first.read_bytes() == part10_bytes(sr)
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_an_invalid_uid_never_becomes_a_path(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    sr = build_result_documents(report_input(read_study, demo_bundle)).sr
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        sr.SOPInstanceUID = "../../etc/passwd"
    sr.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    with pytest.raises(InvalidUIDError, match="SOP Instance UID"):
        write_dataset(sr, tmp_path)
    assert list(tmp_path.iterdir()) == []
