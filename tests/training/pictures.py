"""Tiny class-per-folder picture sets for tests: grey discs, a bright blob on positives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_picture_folders(
    root: Path, per_class: int = 12, size: int = 48, seed: int = 0
) -> dict[str, list[Path]]:
    """``root/hemorrhage/*.png`` (disc + bright blob) and ``root/normal/*.png`` (disc only)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    written: dict[str, list[Path]] = {"hemorrhage": [], "normal": []}
    for name in written:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            r = size * rng.uniform(0.3, 0.42)
            image = np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r, 110.0, 0.0)
            image += rng.normal(0, 6, image.shape)
            if name == "hemorrhage":
                cy, cx = rng.uniform(0.35, 0.65, 2) * size
                blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (size * rng.uniform(0.06, 0.1)) ** 2
                image[blob] = 235.0
            path = folder / f"{name[:3]}{i:03d}.png"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
            written[name].append(path)
    return written


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its bytes (a transfer that stopped half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
