"""Reader for class-per-folder 2D image datasets (PNG, JPG or DICOM).

Examples: ``Train2/Ischaemic`` + ``Train2/Non Ischaemic`` or ``train/NORMAL`` +
``train/PNEUMONIA``. A folder whose name says "normal", "non ...", "no ...", "negative" or
"healthy" is the negative class (all labels 0); every other folder is a class. Two folders, one
negative, give a binary problem with one output; more give one-vs-rest multi-label outputs.
Folder names are normalised (lower case, spaces to underscores, British spellings such as
"ischaemic" to the project's class names).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pydicom

from training.datasets.records import LabelledDataset, SeriesRecord, SliceRecord
from training.preprocessing import PICTURE_SUFFIXES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = PICTURE_SUFFIXES | {".dcm"}
_NEGATIVE = re.compile(r"^(non|not|no|normal|negative|healthy|control)([ _-]|$)", re.IGNORECASE)
_ALIASES = {
    "ischaemic": "ischemic",
    "ischaemia": "ischemic",
    "ischemia": "ischemic",
    "stroke": "ischemic",
    "haemorrhage": "any",
    "hemorrhage": "any",
    "ich": "any",
    "bleed": "any",
}


def normalise_class_name(folder: str) -> str:
    """Folder name to class name: ``"Ischaemic"`` -> ``"ischemic"``, ``"PNEUMONIA"`` ->
    ``"pneumonia"``."""
    name = re.sub(r"[\s\-]+", "_", folder.strip().lower())
    return _ALIASES.get(name, name)


def is_negative_folder(folder: str) -> bool:
    """Whether a folder holds the negative (no finding) class."""
    return bool(_NEGATIVE.match(folder.strip()))


def read_folder_dataset(root: Path, *, patient_regex: str | None = None) -> LabelledDataset:
    """Read ``root/<class>/<image>`` into a dataset of single-image series.

    Parameters
    ----------
    root
        Folder whose sub-folders are classes; images may sit at any depth below them.
    patient_regex
        Regex with one group applied to file names to find the patient (e.g. ``^(person\\d+)_``)
        so that the split keeps a patient's images together. DICOM files use PatientID. Without
        either, each image is its own patient.

    Raises
    ------
    ValueError
        If ``root`` has fewer than two class folders, or only negative ones.
    """
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(folders) < 2:
        raise ValueError(f"{root}: need at least two class folders, found {len(folders)}")
    positives = [f for f in folders if not is_negative_folder(f.name)]
    if not positives:
        raise ValueError(f"{root}: every folder looks like a negative class")
    negatives = [f for f in folders if is_negative_folder(f.name)]
    if not negatives and len(positives) == 2:
        # Two classes, none obviously negative: the first (sorted) folder is the negative one.
        negatives, positives = positives[:1], positives[1:]
    class_names = tuple(dict.fromkeys(normalise_class_name(f.name) for f in positives))
    pattern = re.compile(patient_regex) if patient_regex else None
    series: list[SeriesRecord] = []
    kinds: set[str] = set()
    for folder in folders:
        cls = None if folder in negatives else normalise_class_name(folder.name)
        labels = {name: int(name == cls) for name in class_names}
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image_id = str(path.relative_to(root))
            patient = image_id
            if path.suffix.lower() == ".dcm":
                kinds.add("ct")
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
                patient = str(ds.get("PatientID", "") or image_id)
            else:
                kinds.add("image")
                match = pattern.search(path.name) if pattern else None
                if match:
                    patient = match.group(1)
            record = SliceRecord(path, image_id, image_id, image_id, patient, 0.0, dict(labels))
            series.append(SeriesRecord(image_id, image_id, patient, (record,)))
    if not series:
        raise ValueError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    kind = "ct" if kinds == {"ct"} else "image"
    if len(kinds) > 1:
        logger.warning("%s: mixes DICOM and pictures; all are read as pictures", root)
    logger.info("read %d images of classes %s from %s", len(series), class_names, root)
    return LabelledDataset(series, class_names, kind, f"folders:{root}")
