"""Which studies go to the stroke/ICH pipeline: a configurable rule over series attributes.

Default: modality CT, and head/brain by Body Part Examined or by series/study description.
Studies that do not qualify are still stored, marked ``ignored`` with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SeriesFacts:
    """The attributes routing looks at, one per series."""

    modality: str | None
    body_part: str | None
    series_description: str | None
    study_description: str | None


@dataclass(frozen=True)
class RoutingRule:
    """Modalities and head markers that send a study to the pipeline."""

    modalities: frozenset[str]
    body_parts: frozenset[str]
    description_pattern: re.Pattern[str]

    @classmethod
    def from_lists(
        cls, modalities: Sequence[str], body_parts: Sequence[str], description_pattern: str
    ) -> RoutingRule:
        """Build the rule from the settings' lists (case-insensitive)."""
        return cls(
            frozenset(m.upper() for m in modalities),
            frozenset(b.upper() for b in body_parts),
            re.compile(description_pattern),
        )

    def series_qualifies(self, series: SeriesFacts) -> bool:
        """True when this one series is a head series of a routed modality."""
        if (series.modality or "").upper() not in self.modalities:
            return False
        if (series.body_part or "").upper() in self.body_parts:
            return True
        texts = (series.series_description or "", series.study_description or "")
        return any(self.description_pattern.search(text) for text in texts)

    def decide(self, series: Sequence[SeriesFacts]) -> tuple[bool, str]:
        """(goes to pipeline, reason) for a study made of ``series``."""
        if any(self.series_qualifies(s) for s in series):
            return True, "head CT series present"
        modalities = sorted({(s.modality or "?").upper() for s in series})
        return False, (
            f"no series matches the routing rule (modalities {', '.join(modalities)}; "
            f"need {', '.join(sorted(self.modalities))} of the head)"
        )
