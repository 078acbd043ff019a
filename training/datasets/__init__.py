"""Dataset readers: RSNA-layout DICOM folders and class-per-folder 2D images.

Both produce a :class:`training.datasets.records.LabelledDataset`, so the trainers never know
which layout the data came from.
"""

from training.datasets.folders import read_folder_dataset
from training.datasets.records import LabelledDataset, SeriesRecord, SliceRecord
from training.datasets.rsna import read_rsna_dataset, read_rsna_labels

__all__ = [
    "LabelledDataset",
    "SeriesRecord",
    "SliceRecord",
    "read_folder_dataset",
    "read_rsna_dataset",
    "read_rsna_labels",
]
