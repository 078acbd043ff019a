"""Choose the series to read: axial head CT with full coverage and the thinnest slices.

A scanner sends more than the head series: localizers (one to three coronal or sagittal
images), dose screenshots (secondary capture), bone and soft-tissue reconstructions of the
same volume, thin and thick. We keep CT image series in a near-axial orientation (gantry
tilt up to ``MAX_TILT_DEGREES`` allowed) with enough slices, then prefer the one covering
the most of the head and, among those, the thinnest spacing. Pure: tested without files.

Header facts the database does not hold (ImageType, ConvolutionKernel, SliceThickness) are
read by the worker from one spooled file per series (:mod:`worker.series_headers`) and
refuse: localizers (ImageType LOCALIZER, SCOUT or TOPOGRAM), reformats (DERIVED\\SECONDARY,
whatever their orientation: an MPR or a thick average of another series) and bone or other
sharp kernels (:func:`is_sharp_kernel`). Equally good series are ordered by: slice
thickness inside the bundle's range first, then thinner slices, more slices, lower series
number, and the series UID last so the choice never depends on arrival order.

After decoding, :func:`why_not_after_drops` says whether the chosen series is still fit to
judge when some of its slices could not be decoded and were left out.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from statistics import median

from triage.series_kind import LOCALIZER_TYPES, is_sharp_kernel

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MAX_TILT_DEGREES = 35.0
COVERAGE_TOLERANCE = 0.9  # a series covering 90 % of the best coverage counts as full
MAX_DROPPED_FRACTION = 0.10
"""Most undecodable slices a series may lose and still be judged, as a share of its slices.

Why 10 %: it is the same margin as :data:`COVERAGE_TOLERANCE` (a series covering 90 % of
the head counts as full), and it grows with the series, so a thin 1 mm series of 150
slices may lose a few isolated slices while a thick 5 mm series of 30 may lose three.
Beyond that the fault is no longer one bad slice but a bad transfer or a bad encoder, and
the study should be resent rather than judged on what happened to survive.
"""
MAX_GAP_SPACINGS = 2.5
"""Widest hole dropped slices may leave, in multiples of the series' median spacing.

One missing slice leaves a hole of two spacings, which the neighbours on both sides
still bound; two adjacent missing slices leave three spacings (15 mm on 5 mm CT), enough
to hide a small haemorrhage entirely, so they refuse the series. The half spacing is
tolerance for uneven scanner spacing.
"""


@dataclass(frozen=True)
class SeriesHeader:
    """Facts of a series read from one of its files (none of them is in the database)."""

    image_type: tuple[str, ...] = ()
    kernel: str | None = None
    slice_thickness: float | None = None


@dataclass(frozen=True)
class SliceFacts:
    """What selection needs to know of one instance."""

    sop_class_uid: str
    orientation: tuple[float, ...] | None
    position_z: float | None
    sop_instance_uid: str | None = None


@dataclass(frozen=True)
class SeriesCandidate:
    """One series of the study with its instances' facts."""

    series_uid: str
    modality: str | None
    description: str | None
    slices: Sequence[SliceFacts]
    header: SeriesHeader = SeriesHeader()
    series_number: int | None = None


@dataclass(frozen=True)
class Selection:
    """The chosen series (or None) and why; the reason is stored with the prediction."""

    series_uid: str | None
    reason: str


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
    image_type = {v.upper() for v in candidate.header.image_type}
    if image_type & LOCALIZER_TYPES:
        return "localizer"
    if {"DERIVED", "SECONDARY"} <= image_type:
        return "reformat (ImageType DERIVED\\SECONDARY)"
    if is_sharp_kernel(candidate.header.kernel):
        return f"bone or sharp kernel {candidate.header.kernel}"
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
    thickness_range: tuple[float, float] | None = None,
) -> Selection:
    """Pick the axial soft-tissue CT series to read, or None with the reasons each was refused.

    ``thickness_range`` is the bundle's: a series whose SliceThickness lies in it is
    preferred to a thinner one outside it (a 1 mm series would not be assessed by a bundle
    trained on 5 mm slices when the 5 mm series is there too).
    """
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

    def rank(u: tuple[SeriesCandidate, float, float]) -> tuple[bool, float, int, int, str]:
        candidate, _, spacing = u
        thickness = candidate.header.slice_thickness
        outside = thickness_range is not None and not (
            thickness is not None and thickness_range[0] <= thickness <= thickness_range[1]
        )
        thinness = min(spacing, thickness) if thickness is not None else spacing
        number = candidate.series_number if candidate.series_number is not None else 1 << 30
        return outside, thinness, -len(candidate.slices), number, candidate.series_uid

    chosen, coverage, spacing = min(full, key=rank)
    return Selection(
        chosen.series_uid,
        f"{len(chosen.slices)} axial slices, {coverage:.0f} mm coverage, {spacing:.2f} mm spacing",
    )


def why_not_after_drops(
    slices: Sequence[SliceFacts], dropped: Collection[str], *, min_slices: int = 5
) -> str | None:
    """Why the chosen series can no longer be judged once ``dropped`` are left out, or None.

    ``slices`` are the series' facts as received (with ``sop_instance_uid``), ``dropped``
    the SOP Instance UIDs that could not be decoded. The series is refused when fewer than
    ``min_slices`` remain, when more than :data:`MAX_DROPPED_FRACTION` were dropped, or when
    the dropped slices leave a hole wider than :data:`MAX_GAP_SPACINGS` spacings.
    """
    total = len(slices)
    kept = [s for s in slices if s.sop_instance_uid not in dropped]
    lost = total - len(kept)
    if lost == 0:
        return None
    if len(kept) < min_slices:
        return f"{len(kept)} decodable slices < {min_slices}"
    if lost > MAX_DROPPED_FRACTION * total:
        return f"{lost} of {total} slices dropped, more than {MAX_DROPPED_FRACTION:.0%}"
    _, spacing = _coverage_and_spacing(SeriesCandidate("", "CT", None, slices))
    if not math.isfinite(spacing):
        return None
    holes = sorted(
        s.position_z for s in slices if s.sop_instance_uid in dropped and s.position_z is not None
    )
    positions = sorted(s.position_z for s in kept if s.position_z is not None)
    for below, above in zip(positions, positions[1:], strict=False):
        spans_a_hole = any(below < z < above for z in holes)
        if spans_a_hole and above - below > MAX_GAP_SPACINGS * spacing:
            return (
                f"dropped slices leave a {above - below:.1f} mm gap "
                f"(> {MAX_GAP_SPACINGS:g} x {spacing:.2f} mm spacing)"
            )
    return None
