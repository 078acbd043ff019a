"""Decode every training slice once, resized, into one in-memory array.

Why: decoding a 512x512 DICOM and resizing it costs milliseconds; doing it every epoch on two
CPU cores would dominate training. The cache holds pre-window data (HU for CT, RGB in [0, 1]
for pictures) at the spec's size as float16, so augmentation can still act on HU and the
windows are applied per batch. It is saved as ``.npy`` under the run folder and reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from tqdm import tqdm

from training.datasets.records import SliceRecord
from training.preprocessing import (
    PreprocessSpec,
    apply_windows,
    head_box,
    hu_from_dataset,
    hu_volume,
    resize_stack,
)

logger = logging.getLogger(__name__)


def load_slice(record: SliceRecord, spec: PreprocessSpec) -> np.ndarray:
    """One slice as pre-window data ``(C, size, size)`` float32: C=1 HU, or C=3 RGB [0, 1]."""
    path = record.path
    if path.suffix.lower() == ".dcm" or spec.input_kind == "ct":
        ds = pydicom.dcmread(path)
        if spec.input_kind == "ct":
            hu = hu_from_dataset(ds)
            return resize_stack(hu[None], spec.size).numpy()
        grey = ds.pixel_array.astype(np.float32)
        span = float(grey.max() - grey.min()) or 1.0
        rgb = np.repeat(((grey - grey.min()) / span)[None], 3, axis=0)
    else:
        from PIL import Image

        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    return resize_stack(torch.from_numpy(np.ascontiguousarray(rgb))[None], spec.size)[0].numpy()


def load_series_hu(records: Sequence[SliceRecord], spec: PreprocessSpec) -> np.ndarray:
    """One ordered CT series as ``(N, 1, size, size)`` HU, cropped to the head like the worker.

    Why per series: the head box is shared by all slices of a series so that every slice keeps
    the same scale, exactly as ``training.preprocessing.volume_to_tensor`` does at inference.
    """
    volume = torch.from_numpy(hu_volume([pydicom.dcmread(r.path) for r in records]))
    if spec.crop_to_head:
        top, bottom, left, right = head_box(volume)
        volume = volume[:, top:bottom, left:right]
    return resize_stack(volume, spec.size)[:, None].numpy()


def cache_key(records: Sequence[SliceRecord], spec: PreprocessSpec) -> str:
    """Stable name for a cache of these files at this size and kind."""
    digest = hashlib.sha1(f"{spec.size}|{spec.input_kind}|{spec.crop_to_head}".encode())
    for rec in records:
        digest.update(str(rec.path).encode())
    return digest.hexdigest()[:16]


def build_cache(
    records: Sequence[SliceRecord],
    spec: PreprocessSpec,
    cache_dir: Path | None = None,
    workers: int = 2,
    failures: list[BadFile] | None = None,
) -> np.ndarray:
    """Load ``records`` into an ``(N, C, size, size)`` float16 array, reusing a saved cache.

    A file that cannot be decoded (truncated picture, broken DICOM) does not end the run: its
    rows are left NaN and a :class:`BadFile` naming it and the reason is appended to
    ``failures`` (for CT the whole series is skipped, as its slices share one head box). When
    ``failures`` is None the first bad file raises :class:`BadFileError` instead.
    """
    path = Path(cache_dir) / f"slices-{cache_key(records, spec)}.npy" if cache_dir else None
    bad_path = path.with_suffix(".bad.json") if path is not None else None
    if path is not None and path.exists():
        logger.info("reusing slice cache %s", path)
        if failures is not None and bad_path is not None and bad_path.exists():
            failures.extend(BadFile(Path(p), r) for p, r in json.loads(bad_path.read_text()))
        return np.load(path, mmap_mode=None)
    found: list[BadFile] = []
    channels = 1 if spec.input_kind == "ct" else 3
    out = np.empty((len(records), channels, spec.size, spec.size), dtype=np.float16)

    # Work units: whole series for CT (they share a head box), single images otherwise.
    units: list[list[int]] = []
    for index, record in enumerate(records):
        same = (
            units
            and spec.input_kind == "ct"
            and records[units[-1][0]].series_uid == (record.series_uid)
        )
        if same:
            units[-1].append(index)
        else:
            units.append([index])

    def work(unit: list[int]) -> int:
        try:
            if spec.input_kind == "ct":
                out[unit[0] : unit[-1] + 1] = load_series_hu([records[i] for i in unit], spec)
            else:
                out[unit[0]] = load_slice(records[unit[0]], spec)
        except Exception as exc:  # noqa: BLE001 - any decoder error is reported per file
            out[unit[0] : unit[-1] + 1] = np.nan
            found.extend(_bad_files([records[i] for i in unit], spec, exc))
        return len(unit)

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pool supplies the parallelism
    try:
        with (
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
            tqdm(
                total=len(records),
                desc="decoding slices",
                unit="slice",
                leave=False,
                mininterval=5.0,
            ) as bar,
        ):
            for done in pool.map(work, units):
                bar.update(done)
    finally:
        torch.set_num_threads(torch_threads)
    for bad in found:
        logger.warning("%s: skipped, cannot be decoded (%s)", bad.path, bad.reason)
    if found and failures is None:
        raise BadFileError(found)
    if failures is not None:
        failures.extend(found)
    if path is not None and bad_path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
        bad_path.write_text(json.dumps([[str(b.path), b.reason] for b in found]))
    return out


@dataclass(frozen=True)
class BadFile:
    """A file left out of training: where it is and why."""

    path: Path
    reason: str


class BadFileError(ValueError):
    """Files could not be decoded; the message names each one with its reason."""

    def __init__(self, bad: Sequence[BadFile], total: int | None = None) -> None:
        self.bad = list(bad)
        head = f"{len(self.bad)} of {total} files" if total else f"{len(self.bad)} files"
        lines = [f"  {b.path}: {b.reason}" for b in self.bad[:20]]
        more = [f"  ... and {len(self.bad) - 20} more"] if len(self.bad) > 20 else []
        super().__init__(f"{head} cannot be decoded:\n" + "\n".join(lines + more))


def _bad_files(
    records: Sequence[SliceRecord], spec: PreprocessSpec, error: Exception
) -> list[BadFile]:
    """Which of a failed unit's files are bad, each with its own reason."""
    if len(records) == 1:
        return [BadFile(records[0].path, _reason(error))]
    bad = []
    for record in records:
        try:
            hu_from_dataset(pydicom.dcmread(record.path))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            bad.append(BadFile(record.path, _reason(exc)))
    if not bad:  # each slice decodes alone: the series as a whole failed
        return [BadFile(records[0].path, f"series {records[0].series_uid}: {_reason(error)}")]
    return bad


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def to_model_input(batch: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """Pre-window batch ``(B, C, S, S)`` to normalised model input ``(B, 3, S, S)``."""
    batch = batch.float()
    if spec.input_kind == "ct":
        return apply_windows(batch[:, 0], spec)
    mean = torch.tensor(spec.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std
