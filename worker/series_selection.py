"""Choose the series to read: axial head CT with full coverage and the thinnest slices.

A scanner sends more than the head series: localizers (one to three coronal or sagittal
images), dose screenshots (secondary capture), bone and soft-tissue reconstructions of the
same volume, thin and thick. We keep CT image series in a near-axial orientation (gantry
tilt up to ``MAX_TILT_DEGREES`` allowed) with enough slices, then prefer the one covering
the most of the head and, among those, the thinnest spacing. Pure: tested without files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MAX_TILT_DEGREES = 35.0
COVERAGE_TOLERANCE = 0.9  # a series covering 90 % of the best coverage counts as full


@dataclass(frozen=True)
class SliceFacts:
    """What selection needs to know of one instance."""

    sop_class_uid: str
    orientation: tuple[float, ...] | None
    position_z: float | None


@dataclass(frozen=True)
class SeriesCandidate:
    """One series of the study with its instances' facts."""

    series_uid: str
    modality: str | None
    description: str | None
    slices: Sequence[SliceFacts]


@dataclass(frozen=True)
class Selection:
    """The chosen series (or None) and why; the reason is stored with the prediction."""

    series_uid: str | None
    reason: str


def parse_orientation(text: str | None) -> tuple[float, ...] | None:
    """Parse a stored ``a\\b\\c\\d\\e\\f`` ImageOrientationPatient."""
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split("\\"))
    except ValueError:
        return None
    return values if len(values) == 6 else None


def axial_tilt_degrees(orientation: tuple[float, ...]) -> float:
    """Angle between the image plane's normal and the patient's foot-head axis."""
    r, c = orientation[:3], orientation[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(v * v for v in n)) or 1.0
    return math.degrees(math.acos(min(1.0, abs(n[2]) / norm)))


def _why_not(candidate: SeriesCandidate, min_slices: int, max_tilt: float) -> str | None:
    if (candidate.modality or "").upper() != "CT":
        return f"modality {candidate.modality}"
    classes = {s.sop_class_uid for s in candidate.slices}
    if not classes <= {CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE}:
        return "not CT image storage (e.g. screenshots)"
    if len(candidate.slices) < min_slices:
        return f"{len(candidate.slices)} slices < {min_slices}"
    orientations = [s.orientation for s in candidate.slices]
    if any(o is None for o in orientations):
        return "missing orientation"
    tilt = max(axial_tilt_degrees(o) for o in orientations if o is not None)
    if tilt > max_tilt:
        return f"not axial (tilt {tilt:.0f} degrees)"
    return None


def _coverage_and_spacing(candidate: SeriesCandidate) -> tuple[float, float]:
    positions = sorted(s.position_z for s in candidate.slices if s.position_z is not None)
    if len(positions) < 2:
        return 0.0, math.inf
    steps = [b - a for a, b in zip(positions, positions[1:], strict=False) if b - a > 1e-3]
    return positions[-1] - positions[0], (median(steps) if steps else math.inf)


def select_series(
    candidates: Sequence[SeriesCandidate],
    *,
    min_slices: int = 5,
    max_tilt_degrees: float = MAX_TILT_DEGREES,
) -> Selection:
    """Pick the axial CT series to read, or None with the reasons each was refused."""
    usable: list[tuple[SeriesCandidate, float, float]] = []
    refused: list[str] = []
    for candidate in candidates:
        why = _why_not(candidate, min_slices, max_tilt_degrees)
        if why:
            refused.append(f"{candidate.description or candidate.series_uid}: {why}")
            continue
        coverage, spacing = _coverage_and_spacing(candidate)
        usable.append((candidate, coverage, spacing))
    if not usable:
        return Selection(None, "no axial CT series: " + "; ".join(refused))
    best_coverage = max(coverage for _, coverage, _ in usable)
    full = [u for u in usable if u[1] >= COVERAGE_TOLERANCE * best_coverage]
    chosen, coverage, spacing = min(full, key=lambda u: (u[2], -len(u[0].slices)))
    return Selection(
        chosen.series_uid,
        f"{len(chosen.slices)} axial slices, {coverage:.0f} mm coverage, {spacing:.2f} mm spacing",
    )
