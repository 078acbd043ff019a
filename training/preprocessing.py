"""The one implementation of CT preprocessing, shared by training and the worker.

Why one implementation: a model is only as good as the agreement between how its training
slices and its deployed slices were prepared. The worker therefore never hard-codes windows or
sizes; it reads a :class:`PreprocessSpec` from the bundle and calls the functions here.

Pipeline (numpy first, torch only for the batched resize):

1. :func:`hu_from_dataset` - stored values to Hounsfield units with rescale slope/intercept,
   padding values mapped to air, and the known wrong-intercept case repaired.
2. :func:`order_slices` - sort slices along the patient axis: ImagePositionPatient projected on
   the normal of ImageOrientationPatient, falling back to InstanceNumber.
3. :func:`volume_to_tensor` - resize the HU stack once, then stack the spec's windows (brain
   40/80, subdural 80/200, bone 600/2800 by default) as three channels and normalise.

``preprocess_datasets`` chains the three for a series; ``image_file_to_tensor`` handles PNG/JPG.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

AIR_HU = -1024.0
MAX_HU = 3071.0


@dataclass(frozen=True)
class Window:
    """A display window: HU ``centre`` and ``width`` mapped linearly onto [0, 1]."""

    name: str
    centre: float
    width: float


DEFAULT_WINDOWS: tuple[Window, ...] = (
    Window("brain", 40.0, 80.0),
    Window("subdural", 80.0, 200.0),
    Window("bone", 600.0, 2800.0),
)


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn slices into model input; serialised into every bundle.

    Attributes
    ----------
    windows
        Windows stacked as channels, in channel order.
    size
        Square side in pixels after resizing.
    mean, std
        Per-channel normalisation applied after windowing.
    input_kind
        ``"ct"`` for HU slices windowed as above; ``"image"`` for 2D pictures (PNG/JPG) whose
        grey levels are used as they are (folder datasets).
    crop_to_head
        Crop each series to the square box around the head (one box per series, so every slice
        keeps the same scale) before resizing; the air around the head then costs no pixels.
    """

    windows: tuple[Window, ...] = DEFAULT_WINDOWS
    size: int = 256
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    input_kind: str = "ct"
    crop_to_head: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.windows) != 3:
            raise ValueError(f"windows: need exactly 3 windows (got {len(self.windows)})")
        if self.size < 8:
            raise ValueError(f"size: must be at least 8 (got {self.size})")
        if self.input_kind not in ("ct", "image"):
            raise ValueError(f"input_kind: 'ct' or 'image' (got {self.input_kind!r})")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, as stored in the bundle config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Inverse of :meth:`to_dict`; unknown keys are refused so typos do not pass silently."""
        known = {"windows", "size", "mean", "std", "input_kind", "crop_to_head", "extra"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"preprocess spec: unknown keys {sorted(unknown)}")
        windows = tuple(
            Window(**w) for w in data.get("windows", [asdict(w) for w in DEFAULT_WINDOWS])
        )
        return cls(
            windows=windows,
            size=int(data.get("size", 256)),
            mean=tuple(float(v) for v in data.get("mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data.get("std", (0.25, 0.25, 0.25))),  # type: ignore[arg-type]
            input_kind=str(data.get("input_kind", "ct")),
            crop_to_head=bool(data.get("crop_to_head", False)),
            extra=dict(data.get("extra", {})),
        )


def hu_from_dataset(ds: Dataset) -> np.ndarray:
    """Return one slice in Hounsfield units as float32, padding set to air.

    Handles compressed pixel data (via ``ds.pixel_array`` and the pylibjpeg plugins), the
    scanner padding value outside the reconstruction circle (``PixelPaddingValue`` or values
    below -1024 HU), and the known wrong-intercept case found in public data (12-bit unsigned
    pixels with a non-negative intercept whose values wrapped around 4096).

    Raises
    ------
    ValueError
        If the dataset has no pixel data or is not a single-frame greyscale image.
    """
    if "PixelData" not in ds:
        raise ValueError(f"dataset {ds.get('SOPInstanceUID', '?')} has no pixel data")
    raw = ds.pixel_array
    if raw.ndim != 2:
        raise ValueError(f"expected a single-frame greyscale slice, got shape {raw.shape}")
    stored = raw.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    bits = int(ds.get("BitsStored", 16))
    if bits == 12 and int(ds.get("PixelRepresentation", 0)) == 0 and intercept > -100:
        # Known broken export: the intercept was dropped and values shifted by ~1000, so they
        # wrap at 4096. Undo the wrap and use the -1000 intercept it should have had.
        stored = stored + 1000.0
        stored[stored >= 4096.0] -= 4096.0
        intercept = -1000.0
    padding = ds.get("PixelPaddingValue")
    pad_mask = raw == padding if padding is not None else None
    hu = stored * slope + intercept
    if pad_mask is not None:
        hu[pad_mask] = AIR_HU
    np.clip(hu, AIR_HU, MAX_HU, out=hu)
    return hu


def slice_position(ds: Dataset) -> float | None:
    """Position of a slice along the normal of its orientation, in mm; None when unknown."""
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float)
    normal = np.cross(row, col)
    return float(np.dot(normal, np.asarray(ipp, dtype=float)))


def order_slices(datasets: Sequence[Dataset]) -> list[int]:
    """Indices that sort slices along the patient axis (inferior to superior for axial CT).

    Uses ImagePositionPatient projected on the normal of ImageOrientationPatient; when any slice
    lacks geometry, falls back to InstanceNumber, then to the given order. Stable for ties.
    """
    positions = [slice_position(ds) for ds in datasets]
    if all(p is not None for p in positions):
        return sorted(range(len(datasets)), key=lambda i: positions[i])  # type: ignore[arg-type,return-value]
    numbers = [ds.get("InstanceNumber") for ds in datasets]
    if all(n is not None for n in numbers):
        logger.debug("slice geometry missing; ordering by InstanceNumber")
        return sorted(range(len(datasets)), key=lambda i: int(numbers[i]))
    logger.warning("neither geometry nor InstanceNumber on every slice; keeping given order")
    return list(range(len(datasets)))


def resize_stack(images: np.ndarray | torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize an ``(N, H, W)`` or ``(N, C, H, W)`` stack to ``size`` (square when an int).

    Antialiased bilinear, so downsampling averages noise instead of aliasing thin structures.
    """
    shape = (size, size) if isinstance(size, int) else tuple(size)
    tensor = torch.as_tensor(images, dtype=torch.float32)
    squeeze = tensor.ndim == 3
    if squeeze:
        tensor = tensor[:, None]
    if tuple(tensor.shape[-2:]) != shape:
        tensor = F.interpolate(
            tensor, size=shape, mode="bilinear", antialias=True, align_corners=False
        )
    return tensor[:, 0] if squeeze else tensor


def apply_windows(hu: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """Map an ``(N, H, W)`` HU stack to normalised ``(N, 3, H, W)`` window channels.

    Windowing and normalisation are one affine map followed by a clamp, written in place
    into the output channel (three passes over memory instead of six temporaries): this is
    on the worker's hot path for every slice.
    """
    out = torch.empty((hu.shape[0], len(spec.windows), *hu.shape[1:]), dtype=torch.float32)
    for index, win in enumerate(spec.windows):
        low = win.centre - win.width / 2.0
        mean, std = spec.mean[index], spec.std[index]
        scale = 1.0 / (win.width * std)
        channel = out[:, index]
        torch.mul(hu, scale, out=channel)
        channel.add_(-(low / win.width + mean) / std)
        channel.clamp_((0.0 - mean) / std, (1.0 - mean) / std)
    return out


def head_box(
    hu: np.ndarray | torch.Tensor, threshold: float = -300.0, margin: float = 0.05
) -> tuple[int, int, int, int]:
    """Square ``(top, bottom, left, right)`` box around everything denser than ``threshold``
    on any slice of ``(N, H, W)`` HU, widened by ``margin``; the whole image when nothing is.

    The box is clipped to the image and may be non-square only where the image edge cuts it.
    """
    volume = torch.as_tensor(hu)
    mask = (volume > threshold).any(dim=0)
    height, width = mask.shape
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0 or cols.numel() == 0:
        return 0, height, 0, width
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(r1 - r0, c1 - c0)
    side = min(int(round(side * (1 + 2 * margin))), max(height, width))
    cr, cc = (r0 + r1) / 2, (c0 + c1) / 2
    top = int(round(min(max(cr - side / 2, 0), max(height - side, 0))))
    left = int(round(min(max(cc - side / 2, 0), max(width - side, 0))))
    return top, min(top + side, height), left, min(left + side, width)


def volume_to_tensor(hu_volume: np.ndarray | torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """HU slices ``(N, H, W)`` of one series (ordered) to model input ``(N, 3, size, size)``.

    This is the call the worker and training share: with ``spec.crop_to_head`` the series is
    cropped to one head box first, then resized and windowed.
    """
    volume = torch.as_tensor(hu_volume, dtype=torch.float32)
    if spec.crop_to_head:
        top, bottom, left, right = head_box(volume)
        volume = volume[:, top:bottom, left:right]
    return apply_windows(resize_stack(volume, spec.size), spec)


def hu_volume(datasets: Sequence[Dataset], size: int | None = None) -> np.ndarray:
    """Stack slices as HU in the given order; slices of another shape are resized to the first.

    Parameters
    ----------
    datasets
        Slices, already ordered.
    size
        When given, every slice is resized to ``size`` x ``size`` here (saves memory for long
        series). Leave it None when the spec crops to the head: cropping needs full resolution.
    """
    slices = [hu_from_dataset(ds) for ds in datasets]
    target = (size, size) if size else slices[0].shape
    out = np.empty((len(slices), *target), dtype=np.float32)
    for index, hu in enumerate(slices):
        out[index] = hu if hu.shape == target else resize_stack(hu[None], target)[0].numpy()
    return out


def preprocess_datasets(
    datasets: Sequence[Dataset], spec: PreprocessSpec
) -> tuple[torch.Tensor, list[int]]:
    """Order a series and turn it into model input.

    Returns
    -------
    tuple[torch.Tensor, list[int]]
        ``(N, 3, size, size)`` input in patient-axis order, and the order as indices into
        ``datasets`` (so results can be mapped back to SOP Instance UIDs).
    """
    order = order_slices(datasets)
    ordered = [datasets[i] for i in order]
    size = None if spec.crop_to_head else spec.size
    return volume_to_tensor(hu_volume(ordered, size), spec), order


PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
"""File endings read as pictures (PIL) rather than DICOM, everywhere in the project."""


def image_file_to_tensor(path: Path, spec: PreprocessSpec) -> torch.Tensor:
    """Read a PNG/JPG as ``(1, 3, size, size)`` model input.

    For ``input_kind == "image"`` the picture's own grey levels or colours are used. For a CT
    bundle a greyscale picture is taken as an already brain-windowed slice (0 -> 0 HU,
    255 -> 80 HU) and re-windowed, which is how exported key images are usually written.
    """
    from PIL import Image

    with Image.open(path) as img:
        if spec.input_kind == "image":
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
            tensor = resize_stack(torch.from_numpy(rgb).permute(2, 0, 1)[None], spec.size)
            mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
            std = torch.tensor(spec.std).view(1, 3, 1, 1)
            return (tensor - mean) / std
        grey = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    brain = spec.windows[0]
    hu = grey * brain.width + brain.centre - brain.width / 2.0
    return volume_to_tensor(hu[None], spec)
