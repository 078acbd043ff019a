"""Write the tiny DICOM files under ``tests/data`` (run once; the files are committed).

Each is a 16x16 CT image of the same study, changed in one way a sender can get wrong::

    python tests/data/make_test_files.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

HERE = Path(__file__).resolve().parent
ROOT = "1.2.826.0.1.3680043.8.498.7771"
STUDY_UID = f"{ROOT}.1"
SERIES_UID = f"{ROOT}.2"


def ct_slice(sop_uid: str) -> Dataset:
    """A valid, tiny CT Image Storage dataset of a head, with file meta."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.Modality = "CT"
    ds.BodyPartExamined = "HEAD"
    ds.StudyDescription = "CT HEAD TEST FILE"
    ds.SeriesDescription = "HEAD 5mm"
    ds.PatientID = "TESTDATA"
    ds.StudyDate = "20240101"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImagesInAcquisition = 1
    ds.ImagePositionPatient = [-125.0, -125.0, 10.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 5.0
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = (np.arange(256, dtype="<i2") * 7).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def save(ds: Dataset, name: str) -> Path:
    path = HERE / name
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def main() -> None:
    save(ct_slice(f"{ROOT}.3.1"), "ct_head_16x16.dcm")

    truncated = save(ct_slice(f"{ROOT}.3.2"), "ct_truncated_pixel_data.dcm")
    truncated.write_bytes(truncated.read_bytes()[:-100])

    garbage = save(ct_slice(f"{ROOT}.3.3"), "ct_garbage_dataset.dcm")
    raw = garbage.read_bytes()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")
    garbage.write_bytes(raw[:meta_end] + bytes(range(7, 250)) * 3)

    for name, uid in (("ct_uid_dotdot_slash.dcm", "../../etc/passwd"),
                      ("ct_uid_with_slash.dcm", "1.2.3/../../x")):  # fmt: skip
        save(ct_slice(uid), name)

    no_pixels = ct_slice(f"{ROOT}.3.4")
    del no_pixels.PixelData
    save(no_pixels, "ct_without_pixel_data.dcm")

    # dcmwrite makes the meta agree with the dataset, so the meta is edited in place
    for name, number, ours, theirs in (
        ("ct_sop_class_mismatch.dcm", 5, CTImageStorage, MRImageStorage),
        ("ct_sop_instance_mismatch.dcm", 6, f"{ROOT}.3.6", f"{ROOT}.3.7"),
    ):
        path = save(ct_slice(f"{ROOT}.3.{number}"), name)
        raw = path.read_bytes()
        assert len(ours) == len(theirs)
        path.write_bytes(raw.replace(ours.encode(), theirs.encode(), 1))  # first is in the meta


if __name__ == "__main__":
    main()
