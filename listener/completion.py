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

from db.vocabulary import CompletionBasis

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
    """The policy's answer: complete or not, by which rule, and why in words.

    ``basis`` is the rule that decided (None while waiting); ``reason`` is the text stored
    with the study for people, never parsed by code.
    """

    complete: bool
    reason: str
    basis: CompletionBasis | None = None


WAITING = Decision(False, "waiting")


@dataclass(frozen=True)
class SeriesWhole:
    """Why one series is whole: the rule, and the words for it."""

    basis: CompletionBasis
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
    """Why the series is whole, in words, or None when it may still be arriving."""
    whole = whole_by(progress, site_expected)
    return whole.reason if whole else None


def whole_by(progress: SeriesProgress, site_expected: int = 0) -> SeriesWhole | None:
    """The rule by which the series is whole, or None when it may still be arriving."""
    expected = progress.expected or site_expected or None
    if expected is not None and progress.count >= expected:
        basis = CompletionBasis.ANNOUNCED_COUNT if progress.expected else CompletionBasis.SITE_COUNT
        return SeriesWhole(basis, f"announced count {expected} arrived")
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
    return SeriesWhole(CompletionBasis.GEOMETRY, f"instances 1..{n} contiguous and evenly spaced")


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

    The basis of a study whole by counts is ``ANNOUNCED_COUNT`` when every series announced
    its own, ``SITE_COUNT`` when any relied on the site's; any series whole by geometry alone
    makes the study's basis ``GEOMETRY``.
    """
    idle = now - last_received
    if idle >= stable_seconds:
        return Decision(
            True,
            f"idle for {idle:.1f}s (stable_seconds={stable_seconds:g})",
            CompletionBasis.IDLE_TIMER,
        )
    if not series:
        return WAITING
    if count_quiet_seconds is None:
        count_quiet_seconds = min(0.5, quiet_seconds)
    if idle < min(count_quiet_seconds, quiet_seconds):
        return WAITING
    wholes = [whole_by(s, site_expected) for s in series]
    if any(w is None for w in wholes):
        return WAITING
    bases = {w.basis for w in wholes if w is not None}
    by_count = all(b.by_count for b in bases)
    if by_count or idle >= quiet_seconds:
        how = "by announced count" if by_count else "by geometry"
        if not by_count:
            basis = CompletionBasis.GEOMETRY
        elif CompletionBasis.SITE_COUNT in bases:
            basis = CompletionBasis.SITE_COUNT
        else:
            basis = CompletionBasis.ANNOUNCED_COUNT
        return Decision(
            True, f"all {len(series)} series whole {how} after {idle:.1f}s quiet", basis
        )
    return WAITING
