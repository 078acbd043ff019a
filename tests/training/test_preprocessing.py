"""HU conversion, windowing and slice ordering behave as the worker relies on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset

from training.phantom import write_phantom_study
from training.preprocessing import (
    PreprocessSpec,
    Window,
    apply_windows,
    head_box,
    hu_from_dataset,
    order_slices,
    preprocess_datasets,
    volume_to_tensor,
)


def _slice(stored: np.ndarray, **tags: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = int(tags.pop("BitsStored", 16))
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(tags.pop("PixelRepresentation", 1))
    dtype = "<i2" if ds.PixelRepresentation else "<u2"
    ds.PixelData = stored.astype(dtype).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return ds


def test_rescale_and_padding_become_hu_and_air() -> None:
    stored = np.array([[-2000, 0], [1064, 2024]])
    ds = _slice(stored, RescaleSlope=1, RescaleIntercept=-1024, PixelPaddingValue=-2000)
    hu = hu_from_dataset(ds)
    assert hu.tolist() == [[-1024.0, -1024.0], [40.0, 1000.0]]


def test_values_below_air_without_padding_tag_are_clipped() -> None:
    ds = _slice(np.array([[-3000, 1074]]), RescaleSlope=1, RescaleIntercept=-1024)
    assert hu_from_dataset(ds).tolist() == [[-1024.0, 50.0]]


def test_wrapped_twelve_bit_intercept_is_repaired() -> None:
    # The known-bad files hold HU wrapped into 12 unsigned bits, with a useless intercept.
    true_hu = np.array([[40, -1000]])
    stored = true_hu % 4096
    ds = _slice(stored, BitsStored=12, PixelRepresentation=0, RescaleSlope=1, RescaleIntercept=1)
    assert hu_from_dataset(ds).tolist() == [[40.0, -1000.0]]


def test_brain_window_maps_40_80_to_unit_range() -> None:
    spec = PreprocessSpec(
        windows=(Window("brain", 40, 80), Window("subdural", 80, 200), Window("bone", 600, 2800)),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    hu = torch.tensor([[[0.0, 40.0, 80.0, 500.0]]])
    out = apply_windows(hu, spec)
    assert out.shape == (1, 3, 1, 4)
    assert out[0, 0, 0].tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0])
    assert out[0, 1, 0].tolist() == pytest.approx([0.1, 0.3, 0.5, 1.0])


def test_slices_order_along_patient_axis_not_file_or_instance_order(tmp_path: Path) -> None:
    study = write_phantom_study(tmp_path, slices=5, size=32, seed=1)
    datasets = [pydicom.dcmread(p) for p in study.files]
    # Scramble the order and lie in InstanceNumber: geometry must win.
    shuffled = [datasets[i] for i in (3, 0, 4, 1, 2)]
    for ds, number in zip(shuffled, (1, 2, 3, 4, 5), strict=True):
        ds.InstanceNumber = number
    order = order_slices(shuffled)
    z = [float(shuffled[i].ImagePositionPatient[2]) for i in order]
    assert z == sorted(z)
    assert order == [1, 3, 4, 0, 2]


def test_ordering_uses_the_orientation_normal() -> None:
    # Sagittal slices: the normal (row x column) is -x, so x decides (descending), not z.
    def sag(x: float, z: float) -> Dataset:
        ds = Dataset()
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [x, 0, z]
        return ds

    order = order_slices([sag(10, 0), sag(-5, 5), sag(2, 9)])
    assert order == [0, 2, 1]


def test_ordering_falls_back_to_instance_number() -> None:
    slices = []
    for number in (3, 1, 2):
        ds = Dataset()
        ds.InstanceNumber = number
        slices.append(ds)
    assert order_slices(slices) == [1, 2, 0]


def test_preprocess_series_gives_model_input(tmp_path: Path) -> None:
    study = write_phantom_study(tmp_path, slices=4, size=64, seed=2)
    datasets = [pydicom.dcmread(p) for p in reversed(study.files)]
    x, order = preprocess_datasets(datasets, PreprocessSpec(size=32))
    assert x.shape == (4, 3, 32, 32)
    assert order == [3, 2, 1, 0]
    assert torch.isfinite(x).all()


def test_crop_to_head_uses_one_box_per_series() -> None:
    hu = np.full((2, 100, 100), -1024.0, dtype=np.float32)
    hu[0, 30:50, 40:60] = 40.0  # small head on slice 0
    hu[1, 20:70, 30:60] = 40.0  # bigger on slice 1: the box must cover both
    top, bottom, left, right = head_box(hu, margin=0.0)
    assert (top, bottom) == (20, 70)
    assert right - left == bottom - top == 50
    assert left <= 30 and right >= 60
    spec = PreprocessSpec(size=25, crop_to_head=True, mean=(0, 0, 0), std=(1, 1, 1))
    x = volume_to_tensor(hu, spec)
    assert x.shape == (2, 3, 25, 25)
    # After cropping, brain fills ~half of the input instead of 15 % of it.
    assert float((x[1, 0] > 0.2).float().mean()) > 0.35
    plain = volume_to_tensor(hu, PreprocessSpec(size=25, mean=(0, 0, 0), std=(1, 1, 1)))
    assert float((plain[1, 0] > 0.2).float().mean()) < 0.25
