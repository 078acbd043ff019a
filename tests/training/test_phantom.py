"""The phantom generator writes valid CT DICOM with the requested lesions labelled."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from training.classes import CLASS_NAMES
from training.phantom import write_phantom_dataset, write_phantom_study


def test_study_is_valid_ct_dicom_with_geometry(tmp_path: Path) -> None:
    study = write_phantom_study(tmp_path, slices=6, size=128, seed=7)
    assert len(study.files) == 6
    datasets = [pydicom.dcmread(path) for path in study.files]
    for number, ds in enumerate(datasets, start=1):
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.StudyInstanceUID == study.study_uid
        assert ds.SeriesInstanceUID == study.series_uid
        assert ds.InstanceNumber == number
        assert ds.ImagesInAcquisition == 6
        assert ds.Rows == ds.Columns == 128
        assert Path(ds.filename).name == f"{ds.SOPInstanceUID}.dcm"
        assert ds.pixel_array.dtype == np.int16
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert np.allclose(np.diff(z), 5.0)
    hu = datasets[3].pixel_array.astype(np.float32) * datasets[3].RescaleSlope
    hu += datasets[3].RescaleIntercept
    centre = hu[54:74, 54:74]
    assert 15.0 < float(np.median(centre)) < 50.0, "brain parenchyma should be ~30-40 HU"
    assert float(hu.max()) > 700.0, "the skull should be bone density"
    assert float(np.median(hu[:4, 60:68])) < -900.0, "outside the head is air"


def test_same_seed_gives_same_study_and_uids(tmp_path: Path) -> None:
    first = write_phantom_study(tmp_path / "a", slices=3, size=64, seed=11, lesions=["subdural"])
    second = write_phantom_study(tmp_path / "b", slices=3, size=64, seed=11, lesions=["subdural"])
    other = write_phantom_study(tmp_path / "c", slices=3, size=64, seed=12)
    assert first.study_uid == second.study_uid != other.study_uid
    a = pydicom.dcmread(first.files[1]).pixel_array
    b = pydicom.dcmread(second.files[1]).pixel_array
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "lesion",
    ["epidural", "subdural", "intraparenchymal", "intraventricular", "subarachnoid", "ischemic"],
)
def test_requested_lesion_is_labelled_and_only_it(tmp_path: Path, lesion: str) -> None:
    study = write_phantom_study(tmp_path, slices=20, size=96, seed=3, lesions=[lesion])
    labels = study.study_labels
    assert labels[lesion] == 1
    assert labels["any"] == (0 if lesion == "ischemic" else 1)
    assert sum(labels.values()) == (1 if lesion == "ischemic" else 2)


def test_lesions_together_and_blood_is_hyperdense(tmp_path: Path) -> None:
    normal = write_phantom_study(tmp_path / "n", slices=20, size=128, seed=5)
    bleed = write_phantom_study(
        tmp_path / "b", slices=20, size=128, seed=5, lesions=["intraparenchymal", "subdural"]
    )
    assert bleed.study_labels["intraparenchymal"] == bleed.study_labels["subdural"] == 1
    assert sum(normal.study_labels.values()) == 0
    blood_voxels = 0
    for a, b in zip(normal.files, bleed.files, strict=True):
        hu_n = pydicom.dcmread(a).pixel_array.astype(np.int32) - 1024
        hu_b = pydicom.dcmread(b).pixel_array.astype(np.int32) - 1024
        changed = np.abs(hu_b - hu_n) > 20
        blood_voxels += int(((hu_b > 50) & (hu_b < 95) & changed).sum())
    assert blood_voxels > 100


def test_dataset_writes_rsna_csv_covering_every_slice(tmp_path: Path) -> None:
    csv_path = write_phantom_dataset(tmp_path, studies=3, seed=2, slices=4, size=64)
    with csv_path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["ID", "Label"]
    files = sorted((tmp_path / "dicom").rglob("*.dcm"))
    assert len(files) == 12
    assert len(rows) - 1 == 12 * len(CLASS_NAMES)
    ids = {row[0].rsplit("_", 1)[0][3:] for row in rows[1:]}
    assert ids == {path.stem for path in files}


def test_phantom_does_not_import_torch() -> None:
    assert "training.phantom" in sys.modules
    # The listener imports the phantom in its tests; it must stay torch-free.
    import subprocess

    code = "import sys, training.phantom; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
