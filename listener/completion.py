"""When is a study complete? Pure functions over arrival times and slice geometry.

The open platforms wait on an idle timer alone, and users report studies declared
complete while a series was still arriving. Here a study is complete when

* no instance arrived for ``stable_seconds`` (the idle timer, reset by each instance), or
* every series is known whole and ``quiet_seconds`` passed since the last instance.

A series is whole when the count it announced (Images in Acquisition, or the count a
site configures) has arrived, or when its instance numbers run 1..n without a hole and
its slice positions are evenly spaced with no gap. No I/O here, so it is tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median

SPACING_TOLERANCE = 0.05  # relative deviation from the median step still "even"
SPACING_ABS_TOLERANCE_MM = 0.05


@dataclass
class SeriesProgress:
    """What has arrived of one series so far."""

    expected: int | None = None
    instance_numbers: set[int] = field(default_factory=set)
    positions: dict[int, float] = field(default_factory=dict)  # instance number -> z along normal
    count: int = 0

    def add(self, instance_number: int | None, position: float | None) -> None:
        """Note one newly stored instance."""
        self.count += 1
        if instance_number is not None:
            self.instance_numbers.add(instance_number)
            if position is not None:
                self.positions[instance_number] = position


@dataclass(frozen=True)
class Decision:
    """The policy's answer: complete or not, and why (stored with the study)."""

    complete: bool
    reason: str


def evenly_spaced(positions: Sequence[float]) -> bool:
    """True when sorted ``positions`` have one step size, no gap and no duplicate."""
    if len(positions) < 2:
        return True
    ordered = sorted(positions)
    steps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    step = median(steps)
    if step <= SPACING_ABS_TOLERANCE_MM:
        return False
    tolerance = max(SPACING_ABS_TOLERANCE_MM, SPACING_TOLERANCE * step)
    return all(abs(s - step) <= tolerance for s in steps)


def series_whole(progress: SeriesProgress, site_expected: int = 0) -> str | None:
    """Why the series is whole, or None when it may still be arriving."""
    expected = progress.expected or site_expected or None
    if expected is not None and progress.count >= expected:
        return f"announced count {expected} arrived"
    numbers = progress.instance_numbers
    n = len(numbers)
    if n == 0 or n != progress.count or min(numbers) != 1 or max(numbers) != n:
        return None
    if expected is not None:
        return None  # an announced count not reached outranks geometry
    if len(progress.positions) != n:
        return None
    if not evenly_spaced(list(progress.positions.values())):
        return None
    return f"instances 1..{n} contiguous and evenly spaced"


def decide(
    *,
    now: float,
    last_received: float,
    series: Sequence[SeriesProgress],
    stable_seconds: float,
    quiet_seconds: float,
    site_expected: int = 0,
    count_quiet_seconds: float | None = None,
) -> Decision:
    """Decide whether a study is complete at time ``now`` (seconds, any common clock).

    A count the scanner announced is definitive for its series, so when every series is
    whole by count the study completes after ``count_quiet_seconds`` (default: the shorter
    of 0.5 s and ``quiet_seconds``), leaving only room for a next series to begin; whole by
    geometry alone waits the full ``quiet_seconds``, since a pause mid-series looks the same.
    """
    idle = now - last_received
    if idle >= stable_seconds:
        return Decision(True, f"idle for {idle:.1f}s (stable_seconds={stable_seconds:g})")
    if not series:
        return Decision(False, "waiting")
    if count_quiet_seconds is None:
        count_quiet_seconds = min(0.5, quiet_seconds)
    if idle < min(count_quiet_seconds, quiet_seconds):
        return Decision(False, "waiting")
    reasons = [series_whole(s, site_expected) for s in series]
    if not all(reasons):
        return Decision(False, "waiting")
    by_count = all(r is not None and r.startswith("announced count") for r in reasons)
    if by_count or idle >= quiet_seconds:
        how = "by announced count" if by_count else "by geometry"
        return Decision(True, f"all {len(series)} series whole {how} after {idle:.1f}s quiet")
    return Decision(False, "waiting")
