"""Reader for the RSNA 2019 Intracranial Hemorrhage layout (plus our ``ischemic`` class).

Layout: a folder of DICOM slices at any depth and a CSV with header ``ID,Label`` and rows
``ID_<image id>_<class>,<0|1>``. The image id is the file name without ``.dcm``; in the RSNA
release the files are already called ``ID_<hex>.dcm``, in ours ``<SOPInstanceUID>.dcm``, and
both are matched. Slices are grouped by their own StudyInstanceUID and SeriesInstanceUID tags
and ordered along the patient axis, so the patient stage sees real sequences.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from training.classes import CLASS_NAMES
from training.datasets.records import LabelledDataset, SeriesRecord, SliceRecord
from training.preprocessing import slice_position

logger = logging.getLogger(__name__)

_HEADER_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "SOPInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "InstanceNumber",
]


def read_rsna_labels(
    csv_path: Path, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, dict[str, int]]:
    """Read an RSNA-format CSV into ``{row image key: {class: 0/1}}``.

    The key is the row ID without its ``_<class>`` suffix (``ID_<image id>``). Labels the
    reader does not know are reported once each and ignored; malformed rows are counted and
    skipped.

    Raises
    ------
    ValueError
        If the header is not ``ID,Label``.
    """
    labels: dict[str, dict[str, int]] = defaultdict(dict)
    unknown: set[str] = set()
    bad = 0
    known = set(class_names)
    with Path(csv_path).open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ID", "Label"]:
            raise ValueError(f"{csv_path}: expected header 'ID,Label', got {header}")
        for row in reader:
            if len(row) < 2 or "_" not in row[0]:
                bad += 1
                continue
            key, name = row[0].strip().rsplit("_", 1)
            if name not in known:
                if name not in unknown:
                    logger.warning("%s: unknown label %r ignored", csv_path, name)
                    unknown.add(name)
                continue
            try:
                value = int(float(row[1]))
            except ValueError:
                bad += 1
                continue
            if value not in (0, 1):
                bad += 1
                continue
            labels[key][name] = value
    if bad:
        logger.warning("%s: %d malformed rows skipped", csv_path, bad)
    return dict(labels)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_rsna_dataset(
    dicom_dir: Path,
    labels_csv: Path | None,
    class_names: Sequence[str] = CLASS_NAMES,
    *,
    labelled_only: bool = False,
) -> LabelledDataset:
    """Scan DICOM headers, attach CSV labels and group slices into ordered series.

    Parameters
    ----------
    dicom_dir
        Root folder, searched at any depth.
    labels_csv
        RSNA-format labels, or None for unlabelled data (prediction).
    class_names
        Classes to keep from the CSV, in model column order.
    labelled_only
        Drop series none of whose slices has a label (RSNA's test images, for instance).

    Raises
    ------
    FileNotFoundError
        If ``dicom_dir`` holds no DICOM files.
    """
    labels = read_rsna_labels(labels_csv, class_names) if labels_csv else {}
    files = sorted(p for p in Path(dicom_dir).rglob("*") if p.is_file() and _is_dicom(p))
    if not files:
        raise FileNotFoundError(f"{dicom_dir}: no DICOM files found")
    groups: dict[tuple[str, str], list[SliceRecord]] = defaultdict(list)
    patients: dict[tuple[str, str], str] = {}
    unlabelled = 0
    seen: set[str] = set()
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (InvalidDicomError, OSError) as exc:
            logger.warning("%s: unreadable DICOM skipped (%s)", path, exc)
            continue
        stem = path.name[:-4] if path.name.lower().endswith(".dcm") else path.name
        key = stem if stem in labels else f"ID_{stem}"
        found = labels.get(key)
        seen.add(key)
        if found is None:
            unlabelled += 1
        study = str(ds.get("StudyInstanceUID", stem))
        series = str(ds.get("SeriesInstanceUID", study))
        position = slice_position(ds)
        if position is None:
            position = float(ds.get("InstanceNumber", 0) or 0)
        record = SliceRecord(
            path=path,
            image_id=stem,
            study_uid=study,
            series_uid=series,
            patient_id=str(ds.get("PatientID", "") or study),
            position=position,
            labels=dict(found or {}),
        )
        groups[(study, series)].append(record)
        patients[(study, series)] = record.patient_id
    if labels and unlabelled:
        logger.warning("%s: %d slices have no labels (treated as unknown)", dicom_dir, unlabelled)
    missing = sorted(set(labels) - seen)
    if missing:
        logger.warning(
            "%s: %d labelled image ids have no file under %s (e.g. %s)",
            labels_csv,
            len(missing),
            dicom_dir,
            ", ".join(missing[:5]),
        )
    series_list = []
    for (study, series), records in sorted(groups.items()):
        if labelled_only and not any(r.labels for r in records):
            continue
        ordered = tuple(sorted(records, key=lambda r: r.position))
        series_list.append(SeriesRecord(study, series, patients[(study, series)], ordered))
    logger.info("read %d slices in %d series from %s", len(files), len(series_list), dicom_dir)
    return LabelledDataset(
        series_list, tuple(class_names), "ct", f"rsna:{dicom_dir}", tuple(missing)
    )
