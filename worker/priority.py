"""Flags and worklist priority from study probabilities and the operating thresholds.

Thresholds come from the bundle (chosen for a target sensitivity on validation data) and
may be overridden per class by the site. Any flagged finding is ``critical`` (hemorrhage
and ischemic stroke are both time-critical); a probability above half its threshold is
``urgent``; everything else ``routine``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from db.vocabulary import Priority

PRIORITIES = tuple(Priority)
PRIORITY_RANK = {priority: rank for rank, priority in enumerate(PRIORITIES)}


@dataclass(frozen=True)
class Triage:
    """Per-class flags, the thresholds used and the resulting priority."""

    flags: dict[str, bool]
    thresholds: dict[str, float]
    priority: Priority


def triage(
    probabilities: Mapping[str, float],
    bundle_thresholds: Mapping[str, float],
    site_overrides: Mapping[str, float] | None = None,
) -> Triage:
    """Apply thresholds (site overrides win) to the probabilities of each class."""
    thresholds = {name: float(bundle_thresholds.get(name, 0.5)) for name in probabilities}
    for name, value in (site_overrides or {}).items():
        if name in thresholds:
            thresholds[name] = float(value)
    flags = {name: probabilities[name] >= thresholds[name] for name in probabilities}
    if any(flags.values()):
        priority = Priority.CRITICAL
    elif any(probabilities[n] >= thresholds[n] / 2 for n in probabilities):
        priority = Priority.URGENT
    else:
        priority = Priority.ROUTINE
    return Triage(flags, thresholds, priority)
