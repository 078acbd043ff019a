"""Synthetic head-CT phantoms written as DICOM studies, with RSNA-format labels.

Why: tests of every service (listener, worker, training) need realistic CT studies without
patient data, and the demo bundle is trained on them. One generator is shared by all, so a
study the listener receives in a test is the same kind of study the demo model was trained on.
This module imports only numpy and pydicom (never torch): the listener process must stay light.

Public API
----------
``write_phantom_study(out_dir, ...) -> PhantomStudy``
    One series of axial slices, one file per slice named ``<SOPInstanceUID>.dcm``.
``write_phantom_dataset(out_dir, studies=N, seed=S) -> Path``
    ``N`` studies under ``out_dir/dicom`` plus ``out_dir/labels.csv`` in the RSNA 2019 layout
    (``ID,Label`` with rows ``ID_<sop uid>_<class>``), including the ``ischemic`` class.

UIDs are derived deterministically from the seed unless given, so the same seed writes the same
study (same UIDs, same pixels).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from training.classes import CLASS_NAMES, HEMORRHAGE_SUBTYPES, LESION_NAMES
from training.phantom_anatomy import PhantomHead
from training.phantom_variation import (
    Variation,
    gaussian_blur,
    sample_variation,
    streak_pattern,
    textured_noise,
)

logger = logging.getLogger(__name__)

FIELD_OF_VIEW_MM = 250.0
PADDING_VALUE = -2000
"""Stored value outside the circular reconstruction field, as many scanners write it."""


@dataclass(frozen=True)
class PhantomStudy:
    """What was written for one phantom study.

    Attributes
    ----------
    study_uid, series_uid, patient_id
        Identifiers written into every file.
    files
        Slice files, ordered inferior to superior (InstanceNumber 1 first).
    lesions
        Lesion class names requested for this study.
    slice_labels
        SOPInstanceUID to ``{class name: 0/1}`` for all of ``training.classes.CLASS_NAMES``.
    """

    study_uid: str
    series_uid: str
    patient_id: str
    files: list[Path]
    lesions: tuple[str, ...]
    slice_labels: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def study_labels(self) -> dict[str, int]:
        """Study-level labels: a study is positive for a class when any slice is."""
        return {
            name: int(any(lab[name] for lab in self.slice_labels.values())) for name in CLASS_NAMES
        }


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["pacs-triage-phantom", *map(str, parts)])


def _base_dataset(
    study_uid: str, series_uid: str, patient_id: str, seed: int, size: int, spacing: float
) -> Dataset:
    ds = Dataset()
    ds.PatientName = f"PHANTOM^{seed}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _uid("for", study_uid, series_uid)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"PH{seed % 10**8:08d}"
    ds.StudyID = str(seed % 10**6)
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CT HEAD WITHOUT CONTRAST (SYNTHETIC PHANTOM)"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.Manufacturer = "pacs-triage phantom"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.PatientPosition = "HFS"
    ds.KVP = 120
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [round(spacing, 6), round(spacing, 6)]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelPaddingValue = PADDING_VALUE
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 80
    return ds


def write_phantom_study(
    out_dir: Path,
    *,
    slices: int = 40,
    size: int = 512,
    lesions: Sequence[str] = (),
    seed: int = 0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str | None = None,
    slice_thickness: float = 5.0,
    modality: str = "CT",
    body_part: str = "HEAD",
    series_description: str = "HEAD ROUTINE",
    images_in_acquisition: bool = True,
    variation: Variation | None = None,
) -> PhantomStudy:
    """Write one synthetic axial head-CT series, one DICOM file per slice.

    Parameters
    ----------
    out_dir
        Folder to write into (created when missing).
    slices
        Number of axial slices; they are centred on the brain, so thin or few slices cover
        less of the head and may miss a lesion (its labels then say 0 for those slices).
    size
        Rows and columns; the field of view is fixed at 250 mm, so pixel spacing is 250 / size.
    lesions
        Lesion class names to draw, alone or together: ``epidural``, ``intraparenchymal``,
        ``intraventricular``, ``subarachnoid``, ``subdural``, ``ischemic``. ``any`` is derived.
    seed
        Seeds anatomy, lesion shapes, noise and (unless given) the UIDs.
    study_uid, series_uid, patient_id
        Identifiers to use instead of seed-derived ones.
    slice_thickness
        SliceThickness and SpacingBetweenSlices in mm.
    modality, body_part, series_description
        Written as Modality, BodyPartExamined and SeriesDescription (tests of routing rules).
    images_in_acquisition
        Write ImagesInAcquisition = ``slices`` (a completeness hint some scanners send).
    variation
        Nuisance variation of this study (``training.phantom_variation``); None or the
        ``none`` family writes exactly the original phantom for the seed.

    Returns
    -------
    PhantomStudy
        UIDs, files (inferior to superior) and per-slice labels.

    Raises
    ------
    ValueError
        If ``lesions`` names an unknown class, or ``slices`` or ``size`` is not positive.
    """
    if slices < 1 or size < 8:
        raise ValueError(f"slices and size must be positive (got slices={slices}, size={size})")
    if "any" in lesions:
        raise ValueError("lesions: 'any' is derived from the hemorrhage subtypes; name a subtype")
    rng = np.random.default_rng(seed)
    head = PhantomHead(rng, tuple(lesions))
    varied = variation is not None and not variation.is_identity
    if varied:
        assert variation is not None
        head.vary(variation)
        artefact_rng = np.random.default_rng([seed, 0x5EED])
    study_uid = study_uid or _uid("study", seed)
    series_uid = series_uid or _uid("series", study_uid, seed)
    patient_id = patient_id or f"PHANTOM{seed:06d}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    field_of_view = variation.fov_mm if varied and variation is not None else FIELD_OF_VIEW_MM
    spacing = field_of_view / size
    offsets = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * spacing
    x, y = offsets[None, :], offsets[:, None]
    fov = (x**2 + y**2) > (field_of_view / 2.0) ** 2
    z0 = rng.uniform(0.0, 15.0) - (slices - 1) * slice_thickness / 2.0
    base = _base_dataset(study_uid, series_uid, patient_id, seed, size, spacing)
    base.Modality = modality
    base.BodyPartExamined = body_part
    base.SeriesDescription = series_description
    base.SliceThickness = slice_thickness
    base.SpacingBetweenSlices = slice_thickness
    if images_in_acquisition:
        base.ImagesInAcquisition = slices

    files: list[Path] = []
    slice_labels: dict[str, dict[str, int]] = {}
    for index in range(slices):
        z = float(z0 + index * slice_thickness)
        hu, found = head.render(x, y, z)
        if varied and variation is not None:
            hu = _artefacts(hu, x, y, head, variation, artefact_rng, spacing)
        stored = np.clip(np.rint(hu + 1024.0), -1024, 4000).astype("<i2")
        stored[fov] = PADDING_VALUE
        sop_uid = _uid("sop", series_uid, index)
        ds = base.copy()
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [float(x[0, 0]), float(y[0, 0]), round(z, 4)]
        ds.SliceLocation = round(z, 4)
        ds.PixelData = stored.tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = out_dir / f"{sop_uid}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
        labels = {name: found.get(name, 0) for name in LESION_NAMES}
        labels["any"] = int(any(labels[name] for name in HEMORRHAGE_SUBTYPES))
        slice_labels[sop_uid] = {name: labels[name] for name in CLASS_NAMES}
    logger.debug("wrote phantom study %s (%d slices, lesions=%s)", study_uid, slices, lesions)
    return PhantomStudy(study_uid, series_uid, patient_id, files, tuple(lesions), slice_labels)


def _artefacts(
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    head: PhantomHead,
    variation: Variation,
    rng: np.random.Generator,
    spacing: float,
) -> np.ndarray:
    """Partial volume (in-plane blur), streaks inside the head, then textured noise."""
    hu = gaussian_blur(hu, variation.partial_volume_px)
    if variation.streaks:
        inside = hu > -500.0
        centre = (float(head.centre[0]), float(head.centre[1]))
        streaks = streak_pattern(x, y, variation, centre)
        hu = np.where(inside, hu + streaks, hu)
    return hu + textured_noise(hu.shape, variation, rng)


def sample_lesions(rng: np.random.Generator, probability: float = 0.25) -> tuple[str, ...]:
    """Draw a lesion combination: each class independently present with ``probability``."""
    return tuple(name for name in LESION_NAMES if rng.random() < probability)


def write_phantom_dataset(
    out_dir: Path,
    *,
    studies: int,
    seed: int,
    slices: int = 24,
    size: int = 256,
    lesion_probability: float = 0.25,
    follow_up_probability: float = 0.2,
    csv_name: str = "labels.csv",
    variation: str = "none",
) -> Path:
    """Write ``studies`` phantom studies and their RSNA-format labels CSV.

    Studies go to ``out_dir/dicom/<index>/``. Some patients get a second study (a follow-up,
    same patient ID) so that patient-wise splitting is exercised.

    Parameters
    ----------
    out_dir
        Dataset root (created when missing).
    studies
        Number of studies.
    seed
        Seeds everything; two different seeds give disjoint UIDs and patients.
    slices, size
        Per-study slice count and matrix size.
    lesion_probability
        Chance of each lesion class, independently, per study.
    follow_up_probability
        Chance that a study belongs to the previous study's patient.
    csv_name
        File name of the labels CSV inside ``out_dir``.
    variation
        Family of nuisance variation (``training.phantom_variation.FAMILIES``) drawn per
        study; ``none`` (the default) writes the original phantoms.

    Returns
    -------
    Path
        The labels CSV.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    variation_rng = np.random.default_rng([seed, 0xFA111])
    csv_path = out_dir / csv_name
    out_dir.mkdir(parents=True, exist_ok=True)
    patient = 0
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Label"])
        for index in range(studies):
            if index == 0 or rng.random() >= follow_up_probability:
                patient += 1
            thickness = float(rng.choice([4.0, 5.0, 5.0, 6.0]))
            study = write_phantom_study(
                out_dir / "dicom" / f"{index:05d}",
                slices=slices,
                size=size,
                lesions=sample_lesions(rng, lesion_probability),
                seed=int(rng.integers(0, 2**31 - 1)),
                patient_id=f"PHANTOM-{seed}-{patient:05d}",
                slice_thickness=thickness,
                variation=sample_variation(variation, variation_rng),
            )
            for sop_uid, labels in study.slice_labels.items():
                for name in CLASS_NAMES:
                    writer.writerow([f"ID_{sop_uid}_{name}", labels[name]])
    logger.info("wrote %d phantom studies to %s", studies, out_dir)
    return csv_path
