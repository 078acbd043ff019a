"""Both dataset readers on files the test writes: RSNA layout and class folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.datasets import read_folder_dataset, read_rsna_dataset, read_rsna_labels
from training.datasets.records import label_matrix
from training.phantom import write_phantom_study
from training.split import split_by_patient


def test_rsna_labels_unknown_class_reported_once_and_missing_means_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "ID,Label\n"
        "ID_abc_any,1\nID_abc_subdural,1\nID_abc_mystery,1\nID_def_mystery,0\n"
        "ID_def_any,0\nbroken\n"
    )
    with caplog.at_level(logging.WARNING):
        labels = read_rsna_labels(csv_path)
    assert labels == {"ID_abc": {"any": 1, "subdural": 1}, "ID_def": {"any": 0}}
    assert sum("mystery" in r.message for r in caplog.records) == 1
    assert "epidural" not in labels["ID_def"]  # missing means unknown, not negative


def test_rsna_header_is_checked(tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("image,label\nID_a_any,1\n")
    with pytest.raises(ValueError, match="ID,Label"):
        read_rsna_labels(csv_path)


def test_rsna_dataset_groups_orders_and_labels_from_tags(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    # Two studies of one patient, written into a nested and a flat folder.
    first = write_phantom_study(dicom / "x" / "y", slices=4, size=32, seed=1, patient_id="P1")
    second = write_phantom_study(dicom, slices=3, size=32, seed=2, patient_id="P1")
    rows = ["ID,Label"]
    for sop, labels in first.slice_labels.items():
        rows += [f"ID_{sop}_any,{labels['any']}"]
    top = list(first.slice_labels)[-1]
    rows += [f"ID_{top}_subdural,1", f"ID_{top}_any,1"]  # later duplicate rows win
    for sop in second.slice_labels:
        rows += [f"ID_{sop}_ischemic,0"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")

    dataset = read_rsna_dataset(dicom, tmp_path / "labels.csv")
    assert len(dataset.series) == 2
    by_study = {s.study_uid: s for s in dataset.series}
    series = by_study[first.study_uid]
    assert [r.image_id for r in series.slices] == [p.stem for p in first.files]
    positions = [r.position for r in series.slices]
    assert positions == sorted(positions)
    assert series.slices[-1].labels == {"any": 1, "subdural": 1}
    assert series.slices[0].labels == {"any": 0}
    study_labels = dataset.series_labels()
    names = dataset.class_names
    row = [s.study_uid for s in dataset.series].index(first.study_uid)
    assert study_labels[row, names.index("subdural")] == 1
    assert np.isnan(study_labels[row, names.index("epidural")])  # never labelled: unknown
    other = 1 - row
    assert study_labels[other, names.index("ischemic")] == 0
    assert np.isnan(study_labels[other, names.index("any")])


def test_split_keeps_patients_on_one_side(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    rows = ["ID,Label"]
    for i in range(12):
        study = write_phantom_study(
            dicom / str(i), slices=2, size=16, seed=i, patient_id=f"P{i // 2}"
        )
        rows += [f"ID_{sop}_any,{i % 3 == 0}" for sop in study.slice_labels]
    (tmp_path / "labels.csv").write_text(
        "\n".join(rows).replace("True", "1").replace("False", "0") + "\n"
    )
    dataset = read_rsna_dataset(dicom, tmp_path / "labels.csv")
    split = split_by_patient(dataset, 0.25, 0.25, seed=3)
    owner = {}
    for name, uids in split.items():
        for series in dataset.subset(uids).series:
            assert owner.setdefault(series.patient_id, name) == name
    assert sum(len(v) for v in split.values()) == 12
    assert all(split[name] for name in ("train", "val", "test"))


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24), value, dtype=np.uint8)).save(path)


def test_folder_dataset_binary_with_british_spelling(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "Train2" / "Ischaemic" / f"patient{i}_a.png", 200)
        _png(tmp_path / "Train2" / "Non Ischaemic" / f"patient{i + 10}_b.jpg", 50)
    dataset = read_folder_dataset(tmp_path / "Train2", patient_regex=r"^(patient\d+)_")
    assert dataset.class_names == ("ischemic",)
    assert dataset.kind == "image"
    labels = label_matrix(dataset.slices, dataset.class_names)
    assert sorted(labels[:, 0].tolist()) == [0, 0, 0, 1, 1, 1]
    assert {s.patient_id for s in dataset.series} == {f"patient{i}" for i in (0, 1, 2, 10, 11, 12)}


def test_folder_dataset_normal_vs_pneumonia_and_multiclass(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "NORMAL" / "n1.png", 10)
    _png(tmp_path / "a" / "PNEUMONIA" / "p1.png", 100)
    binary = read_folder_dataset(tmp_path / "a")
    assert binary.class_names == ("pneumonia",)
    for name in ("normal", "epidural", "subdural"):
        _png(tmp_path / "b" / name / f"{name}.png", 30)
    multi = read_folder_dataset(tmp_path / "b")
    assert multi.class_names == ("epidural", "subdural")
    labels = label_matrix(multi.slices, multi.class_names)
    assert labels.tolist() == [[1, 0], [0, 0], [0, 1]]


def test_folder_dataset_needs_two_classes(tmp_path: Path) -> None:
    _png(tmp_path / "only" / "x.png", 1)
    with pytest.raises(ValueError, match="two class folders"):
        read_folder_dataset(tmp_path)
