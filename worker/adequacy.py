"""Is the chosen series the kind of input the bundle was trained on? If not, it is not assessed.

Why: a triage model says nothing trustworthy about input it never saw, and a silent
"routine" on such a study is worse than no answer. Cleared triage devices check modality,
body part, orientation, slice thickness, coverage and contrast before they run; so do we,
with the ranges the bundle itself declares (``training.input_domain.AdequacySpec``), and
then score how far the images lie from the training images (:func:`domain_verdict`).
Pure functions over decoded headers and embeddings; the task decides what to store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset

from triage.series_kind import parse_orientation
from worker.series_selection import axial_tilt_degrees

if TYPE_CHECKING:
    from training.input_domain import AdequacySpec, EmbeddingSummary


@dataclass(frozen=True)
class Assessment:
    """Whether the result may be used, and every reason it may not."""

    assessed: bool
    in_domain: bool
    domain_score: float | None
    reasons: list[str] = field(default_factory=list)


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _outside(value: float | None, bounds: tuple[float, float]) -> bool:
    return value is None or not bounds[0] <= value <= bounds[1]


def adequacy_reasons(datasets: Sequence[Dataset], spec: AdequacySpec) -> list[str]:
    """Why ``datasets`` (one series) are outside ``spec``; empty when adequate."""
    if not datasets:
        return ["no slices"]
    first = datasets[0]
    reasons: list[str] = []
    modality = str(first.get("Modality", "") or "").upper()
    if modality != spec.modality:
        reasons.append(f"modality {modality or 'missing'}, not {spec.modality}")
    body = str(first.get("BodyPartExamined", "") or "").strip().upper()
    if body and body not in spec.body_parts:
        reasons.append(f"body part {body}, not {'/'.join(spec.body_parts)}")
    tilts = [
        axial_tilt_degrees(o)
        for o in (
            parse_orientation("\\".join(map(str, d.get("ImageOrientationPatient", []))))
            for d in datasets
        )
        if o is not None
    ]
    if not tilts or max(tilts) > spec.max_tilt_degrees:
        tilt = f"{max(tilts):.0f} degrees" if tilts else "unknown"
        reasons.append(f"not axial within {spec.max_tilt_degrees:g} degrees (tilt {tilt})")
    thickness = _float(first.get("SliceThickness"))
    if _outside(thickness, spec.slice_thickness_mm):
        low, high = spec.slice_thickness_mm
        reasons.append(f"slice thickness {thickness} mm outside {low:g}-{high:g} mm")
    spacing = _float((first.get("PixelSpacing") or [None])[0])
    if _outside(spacing, spec.pixel_spacing_mm):
        low, high = spec.pixel_spacing_mm
        reasons.append(f"pixel spacing {spacing} mm outside {low:g}-{high:g} mm")
    rows, cols = int(first.get("Rows", 0) or 0), int(first.get("Columns", 0) or 0)
    if _outside(rows, spec.matrix) or _outside(cols, spec.matrix):
        reasons.append(f"matrix {rows}x{cols} outside {spec.matrix[0]}-{spec.matrix[1]}")
    if len(datasets) < spec.min_slices:
        reasons.append(f"{len(datasets)} slices < {spec.min_slices}")
    z = [
        p
        for p in (_float((d.get("ImagePositionPatient") or [0, 0, None])[2]) for d in datasets)
        if p is not None
    ]
    coverage = max(z) - min(z) if z else 0.0
    if coverage < spec.min_coverage_mm:
        reasons.append(f"covers {coverage:.0f} mm of the head < {spec.min_coverage_mm:g} mm")
    agent = str(first.get("ContrastBolusAgent", "") or "").strip()
    if spec.reject_contrast and agent:
        reasons.append(f"contrast-enhanced (ContrastBolusAgent {agent})")
    return reasons


def domain_verdict(
    summary: EmbeddingSummary | None, embeddings: np.ndarray | None
) -> tuple[bool, float | None, list[str]]:
    """(in domain, score, reasons) of a series' embeddings against the bundle's summary.

    A bundle without a summary cannot say, so its studies are out of domain, not in.
    """
    if summary is None:
        return False, None, ["bundle carries no summary of its training inputs"]
    if embeddings is None or len(embeddings) == 0:
        return False, None, ["no embeddings to score"]
    score = summary.score(embeddings)
    if score > summary.cut_off:
        return False, score, [f"out of domain: score {score:.2f} > cut-off {summary.cut_off:g}"]
    return True, score, []


def assess(
    adequacy: list[str], summary: EmbeddingSummary | None, embeddings: np.ndarray | None
) -> Assessment:
    """Combine the adequacy reasons and the domain verdict: assessed only when both pass."""
    in_domain, score, why = domain_verdict(summary, embeddings)
    reasons = [f"not assessed: {r}" for r in adequacy] + why
    return Assessment(not adequacy and in_domain, in_domain, score, reasons)
