"""The Key Object Selection document points at the key images and their source slices."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom

from training.bundle import Bundle
from worker.reports import build_result_documents
from worker.reports import codes as rc
from worker.reports.writing import write_dataset

from .conftest import ReadStudy, dciodvfy_errors, dsrdump, report_input


def test_kos_has_no_dciodvfy_errors_and_selects_the_key_images(
    tmp_path: Path, read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    docs = build_result_documents(report_input(read_study, demo_bundle))
    assert docs.kos is not None
    path = write_dataset(docs.kos, tmp_path)
    assert dciodvfy_errors(path) == []
    run = dsrdump(path)  # DCMTK reads key object selections with its SR code
    assert run.returncode == 0 and "Key Object Selection" in run.stdout, run.stderr
    kos = pydicom.dcmread(path)
    assert kos.Modality == "KO"
    assert kos.StudyInstanceUID == read_study.headers[0].StudyInstanceUID
    title = hd.sr.CodedConcept.from_dataset(kos.ConceptNameCodeSequence[0])
    assert title == rc.KOS_TITLE
    referenced = {
        str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for item in kos.ContentSequence
        if item.ValueType == "IMAGE"
    }
    key_uids = {str(ds.SOPInstanceUID) for ds in docs.key_images}
    sources = {k.source_sop_instance_uid for k in read_study.key_images}
    assert referenced == key_uids | sources
