"""What a phantom study randomises besides its label: families of nuisance variation.

Why: the first demo bundle learned the generator, not the finding (AUC 0.80 and log loss 3.2
on another generator's heads). Everything that is not the label is drawn here per study, from
a family of ranges: skull shape (radial harmonics), ventricle size, gantry tilt, field of view,
noise level and texture (smooth or sharp kernels), beam-hardening cupping and streaks,
in-plane partial volume, calcifications and other bright distractors, and lesion contrast.

Families (``FAMILIES``): ``none`` keeps the original generator exactly (same pixels for a
seed, which the other services' tests rely on); ``train`` is what the demo bundle trains on;
``held_out`` uses a noise texture and artefact strengths the ``train`` family never shows
(sharp-kernel noise, strong streaks and cupping, lumpier skulls), so a report on it measures
how well the model transfers to variation it has not seen.

Only numpy: the listener's tests import the generator and must not load torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class VariationRanges:
    """Bounds from which one study's :class:`Variation` is drawn (uniform unless noted)."""

    name: str
    shape: float = 0.0
    """Largest amplitude of the 2nd and 3rd radial harmonics of the skull and brain outline."""
    ventricles: tuple[float, float] = (1.0, 1.0)
    tilt_deg: float = 0.0
    """Largest extra gantry tilt (rotation about the left-right axis)."""
    fov_mm: tuple[float, float] = (250.0, 250.0)
    noise_hu: tuple[float, float] = (3.0, 6.0)
    noise_blur_px: tuple[float, float] = (0.0, 0.0)
    """Correlation length of the noise (a smooth reconstruction kernel)."""
    sharp_noise: float = 0.0
    """Chance that the noise is high-pass (a sharp, bone-like kernel) instead of smooth."""
    streaks: int = 0
    streak_hu: float = 0.0
    cupping_hu: tuple[float, float] = (0.0, 0.0)
    partial_volume_px: tuple[float, float] = (0.0, 0.0)
    distractors: int = 0
    """Largest number of calcifications / bright distractors (never labelled)."""
    lesion_contrast: tuple[float, float] = (1.0, 1.0)
    """Factor on each lesion's contrast against white matter (blood stays 45-100 HU)."""


FAMILIES: dict[str, VariationRanges] = {
    "none": VariationRanges("none"),
    "train": VariationRanges(
        "train",
        shape=0.05,
        ventricles=(0.7, 1.5),
        tilt_deg=15.0,
        fov_mm=(200.0, 300.0),
        noise_hu=(2.0, 9.0),
        noise_blur_px=(0.0, 1.2),
        sharp_noise=0.0,
        streaks=3,
        streak_hu=25.0,
        cupping_hu=(0.0, 6.0),
        partial_volume_px=(0.0, 1.0),
        distractors=4,
        lesion_contrast=(0.7, 1.15),
    ),
}
"""Variation families by name (``training synth --variation``); ``held_out`` below."""
FAMILIES["held_out"] = replace(
    FAMILIES["train"],
    name="held_out",
    shape=0.09,
    noise_hu=(6.0, 12.0),
    noise_blur_px=(0.0, 0.0),
    sharp_noise=1.0,
    streaks=6,
    streak_hu=45.0,
    cupping_hu=(6.0, 12.0),
    distractors=6,
)


@dataclass(frozen=True)
class Variation:
    """One study's draw: every value the renderer needs, nothing random left."""

    family: str
    shape: tuple[float, float, float, float]  # a2, phase2, a3, phase3
    ventricles: float
    tilt_rad: float
    fov_mm: float
    noise_hu: float
    noise_blur_px: float
    sharp_noise: bool
    streaks: tuple[tuple[float, float, float, float, float], ...]  # x, y mm; angle; HU; width
    cupping_hu: float
    partial_volume_px: float
    distractors: tuple[tuple[float, float, float, float, float], ...]  # u, v, w (0-1); mm; HU
    lesion_contrast: float

    @property
    def is_identity(self) -> bool:
        """True for the ``none`` family: the original generator, untouched."""
        return self.family == "none"


def sample_variation(family: str, rng: np.random.Generator) -> Variation:
    """Draw one study's variation from a family.

    Raises
    ------
    ValueError
        If ``family`` is not in :data:`FAMILIES`.
    """
    try:
        r = FAMILIES[family]
    except KeyError:
        raise ValueError(
            f"variation: unknown family {family!r}; known: {sorted(FAMILIES)}"
        ) from None

    def between(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds)) if bounds[1] > bounds[0] else float(bounds[0])

    streaks = tuple(
        (
            float(rng.uniform(-20, 20)),
            float(rng.uniform(-30, 10)),
            float(rng.uniform(0, math.pi)),
            float(rng.uniform(-1, 1) * r.streak_hu),
            float(rng.uniform(0.6, 2.0)),
        )
        for _ in range(int(rng.integers(0, r.streaks + 1)) if r.streaks else 0)
    )
    distractors = tuple(
        (
            float(rng.uniform(-0.5, 0.5)),
            float(rng.uniform(-0.6, 0.6)),
            float(rng.uniform(-0.2, 0.6)),
            float(rng.uniform(1.5, 4.0)),
            float(rng.uniform(130, 450)),
        )
        for _ in range(int(rng.integers(0, r.distractors + 1)) if r.distractors else 0)
    )
    return Variation(
        family=r.name,
        shape=(
            float(rng.uniform(-r.shape, r.shape)),
            float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(-r.shape, r.shape) * 0.6),
            float(rng.uniform(0, 2 * math.pi)),
        ),
        ventricles=between(r.ventricles),
        tilt_rad=math.radians(float(rng.uniform(-r.tilt_deg, r.tilt_deg))),
        fov_mm=between(r.fov_mm),
        noise_hu=between(r.noise_hu),
        noise_blur_px=between(r.noise_blur_px),
        sharp_noise=bool(rng.random() < r.sharp_noise),
        streaks=streaks,
        cupping_hu=between(r.cupping_hu),
        partial_volume_px=between(r.partial_volume_px),
        distractors=distractors,
        lesion_contrast=between(r.lesion_contrast),
    )


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array (edges repeated); the input when sigma < 0.2."""
    if sigma < 0.2:
        return image
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    padded = np.pad(image, radius, mode="edge")
    rows = sum(taps[i] * padded[i : i + image.shape[0], :] for i in range(taps.size))
    return sum(taps[i] * rows[:, i : i + image.shape[1]] for i in range(taps.size)).astype(
        np.float32
    )


def textured_noise(
    shape: tuple[int, int], variation: Variation, rng: np.random.Generator
) -> np.ndarray:
    """Noise of the variation's level and texture: smooth (blurred) or sharp (high-pass)."""
    white = rng.standard_normal(shape).astype(np.float32)
    if variation.sharp_noise:
        texture = white - gaussian_blur(white, 1.5)
    else:
        texture = gaussian_blur(white, variation.noise_blur_px)
    spread = float(texture.std()) or 1.0
    return texture * np.float32(variation.noise_hu / spread)


def streak_pattern(
    x: np.ndarray, y: np.ndarray, variation: Variation, centre: tuple[float, float]
) -> np.ndarray:
    """Sum of straight bright/dark streaks (metal, bone and motion artefacts) in HU."""
    out = np.zeros((y.shape[0], x.shape[1]), dtype=np.float32)
    for sx, sy, angle, hu, width in variation.streaks:
        px, py = x - (centre[0] + sx), y - (centre[1] + sy)
        distance = np.abs(px * math.sin(angle) - py * math.cos(angle))
        out += np.float32(hu) * np.exp(-((distance / width) ** 2)).astype(np.float32)
    return out
