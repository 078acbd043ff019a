"""When is a study complete? Pure functions over arrival times and slice geometry.

The open platforms wait on an idle timer alone, and users report studies declared
complete while a series was still arriving. Here a study is complete when

* no instance arrived for ``stable_seconds`` (the idle timer, reset by each instance), or
* every series that can matter is whole, no association that carried the study is still
  open, and ``quiet_seconds`` passed since the last instance.

Only the series a model could read decide: an axial image series of an original
reconstruction. A scanner pushes more than that in one study (a localizer, dose pages,
an SR, coronal and sagittal reformats, a bone-kernel copy), and those are rarely "whole"
by any rule (one image, pages 1 and 5 of 5, no slice geometry); with them deciding, real
studies waited the full idle timer. They are still stored and listed, and they still
reset the timers when they arrive; they only never hold a study open on their own
(:func:`role_of` says which is which, and why).

A series is whole when the count it announced (Images in Acquisition, or the count a
site configures) has arrived, or when its instance numbers run without a hole (from any
first number) and its slices cover their range without a gap: no step between
neighbouring slices is larger than their thickness (the mean of the two) by more than
:data:`GAP_TOLERANCE`. That accepts two-part protocols (4 mm then 7 mm in one series),
overlapping reconstructions and either direction (vertex first), and refuses a missing
slice. A series without a slice thickness falls back to "evenly spaced". No I/O here, so
it is tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import median

from db.vocabulary import CompletionBasis
from triage.series_kind import LOCALIZER_TYPES, is_sharp_kernel

SPACING_TOLERANCE = 0.05  # relative deviation from the median step still "even"
SPACING_ABS_TOLERANCE_MM = 0.05
GAP_TOLERANCE = 0.10
"""A step larger than the slices' thickness × (1 + this) leaves tissue uncovered: a gap.
Scanners round positions and thickness to ~0.01 mm; 10 % is far below a missing slice."""
AXIAL_MIN_NORMAL_Z = 0.7071
"""|normal · z| at or above cos 45°: axial, gantry tilt (up to 45°) included."""
LOCALIZER_MAX_IMAGES = 2
"""A series of one or two images is a localizer (scout, surview) whatever it says."""

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC and the multi-frame SC classes


class SeriesRole(StrEnum):
    """What a series is for, as far as completion is concerned."""

    READ = "read"  # an axial image series the model may read: decides completion
    LOCALIZER = "localizer"
    SECONDARY_CAPTURE = "secondary_capture"  # dose pages, screen captures, no geometry
    NON_IMAGE = "non_image"  # SR, presentation state, encapsulated document
    REFORMAT = "reformat"  # coronal, sagittal or oblique: derived or not, never read
    BONE_KERNEL = "bone_kernel"

    @property
    def decides(self) -> bool:
        """Whether a series of this role may hold a study open."""
        return self is SeriesRole.READ


@dataclass(frozen=True)
class SeriesTraits:
    """What the first instance of a series says about what the series is."""

    sop_class_uid: str
    is_image: bool = True
    image_type: tuple[str, ...] = ()
    orientation: tuple[float, ...] | None = None
    has_position: bool = True
    kernel: str | None = None


@dataclass
class SeriesProgress:
    """What has arrived of one series so far.

    ``traits`` is None when nothing is known of the series' kind (a test, or a study
    rebuilt without them): such a series decides, the cautious side.
    """

    expected: int | None = None
    instance_numbers: set[int] = field(default_factory=set)
    positions: dict[int, float] = field(default_factory=dict)  # instance number -> z along normal
    thickness: dict[int, float] = field(default_factory=dict)  # instance number -> mm
    count: int = 0
    traits: SeriesTraits | None = None

    def add(
        self, instance_number: int | None, position: float | None, thickness: float | None = None
    ) -> None:
        """Note one newly stored instance."""
        self.count += 1
        if instance_number is not None:
            self.instance_numbers.add(instance_number)
            if position is not None:
                self.positions[instance_number] = position
            if thickness is not None and thickness > 0:
                self.thickness[instance_number] = thickness


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


def _normal(orientation: Sequence[float]) -> tuple[float, float, float]:
    r, c = orientation[:3], orientation[3:]
    return (
        r[1] * c[2] - r[2] * c[1],
        r[2] * c[0] - r[0] * c[2],
        r[0] * c[1] - r[1] * c[0],
    )


def is_axial(orientation: Sequence[float]) -> bool:
    """Whether an Image Orientation (Patient) is axial, gantry tilt up to 45° included."""
    nx, ny, nz = _normal(orientation)
    length = (nx * nx + ny * ny + nz * nz) ** 0.5
    return length > 0 and abs(nz) / length >= AXIAL_MIN_NORMAL_Z


def role_of(progress: SeriesProgress) -> SeriesRole:
    """The role of a series, from its first instance's traits and how many arrived."""
    traits = progress.traits
    if traits is None:
        return SeriesRole.READ
    image_type = {value.upper() for value in traits.image_type}
    if not traits.is_image:
        return SeriesRole.NON_IMAGE
    if traits.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX):
        return SeriesRole.SECONDARY_CAPTURE
    if image_type & LOCALIZER_TYPES:
        return SeriesRole.LOCALIZER
    if not traits.has_position and traits.orientation is None:
        return SeriesRole.SECONDARY_CAPTURE  # no geometry: a page, not a volume
    if traits.orientation is not None and not is_axial(traits.orientation):
        return SeriesRole.REFORMAT
    if is_sharp_kernel(traits.kernel):
        return SeriesRole.BONE_KERNEL
    if progress.count <= LOCALIZER_MAX_IMAGES:
        return SeriesRole.LOCALIZER
    return SeriesRole.READ


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


def covered_without_gap(slices: Sequence[tuple[float, float]]) -> bool:
    """True when (position, thickness) slices cover their range with no gap and no duplicate.

    Neighbours (in position order, whatever the arrival or numbering order) are a gap
    apart when their step exceeds the mean of their thicknesses × (1 + GAP_TOLERANCE).
    """
    ordered = sorted(slices)
    for (a, ta), (b, tb) in zip(ordered, ordered[1:], strict=False):
        step = b - a
        if step <= SPACING_ABS_TOLERANCE_MM:
            return False  # two slices in one place: a duplicate, not a volume
        if step > (ta + tb) / 2 * (1 + GAP_TOLERANCE):
            return False
    return True


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
    if n == 0 or n != progress.count or max(numbers) - min(numbers) != n - 1:
        return None
    if expected is not None:
        return None  # an announced count not reached outranks geometry
    if len(progress.positions) != n:
        return None
    span = f"instances {min(numbers)}..{max(numbers)} contiguous"
    if len(progress.thickness) == n:
        slices = [(progress.positions[i], progress.thickness[i]) for i in numbers]
        if not covered_without_gap(slices):
            return None
        return SeriesWhole(CompletionBasis.GEOMETRY, f"{span}, slices cover without a gap")
    if not evenly_spaced(list(progress.positions.values())):
        return None
    return SeriesWhole(CompletionBasis.GEOMETRY, f"{span} and evenly spaced")


def decide(
    *,
    now: float,
    last_received: float,
    series: Sequence[SeriesProgress],
    stable_seconds: float,
    quiet_seconds: float,
    site_expected: int = 0,
    count_quiet_seconds: float | None = None,
    sender_connected: bool = False,
) -> Decision:
    """Decide whether a study is complete at time ``now`` (seconds, any common clock).

    Only series whose :func:`role_of` decides are asked whether they are whole; when a
    study has none (only pages or a localizer so far), every series is asked, as before.

    A count the scanner announced is definitive for its series, so when every deciding
    series is whole by count the study completes after ``count_quiet_seconds`` (default:
    the shorter of 0.5 s and ``quiet_seconds``), leaving only room for a next series to
    begin; whole by geometry alone waits the full ``quiet_seconds``.

    ``sender_connected`` (an association that carried the study is still open) holds the
    geometry rule: a pause mid-series looks exactly like a whole series, and a sender that
    has not released may be about to send the rest. A count the scanner announced is not
    held (it already says the series is whole), so a study sent over a long association
    that carries other studies too still completes in seconds.

    The basis of a study whole by counts is ``ANNOUNCED_COUNT`` when every deciding series
    announced its own, ``SITE_COUNT`` when any relied on the site's; any series whole by
    geometry alone makes the study's basis ``GEOMETRY``.
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
    deciding = [s for s in series if role_of(s).decides] or list(series)
    wholes = [whole_by(s, site_expected) for s in deciding]
    if any(w is None for w in wholes):
        return WAITING
    bases = {w.basis for w in wholes if w is not None}
    by_count = all(b.by_count for b in bases)
    if sender_connected and not by_count:
        return WAITING
    if by_count or idle >= quiet_seconds:
        how = "by announced count" if by_count else "by geometry"
        if not by_count:
            basis = CompletionBasis.GEOMETRY
        elif CompletionBasis.SITE_COUNT in bases:
            basis = CompletionBasis.SITE_COUNT
        else:
            basis = CompletionBasis.ANNOUNCED_COUNT
        others = _not_deciding(series) if len(deciding) < len(series) else ""
        return Decision(
            True,
            f"all {len(deciding)} series whole {how} after {idle:.1f}s quiet{others}",
            basis,
        )
    return WAITING


def _not_deciding(series: Sequence[SeriesProgress]) -> str:
    roles = sorted(str(role_of(s)) for s in series if not role_of(s).decides)
    return f" ({len(roles)} not deciding: {', '.join(roles)})"
