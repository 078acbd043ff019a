"""The completion policy alone: counts, slice geometry and timers, with no network or database."""

from __future__ import annotations

import math

import pytest

from db.vocabulary import CompletionBasis
from listener.completion import (
    SeriesProgress,
    SeriesRole,
    SeriesTraits,
    covered_without_gap,
    decide,
    evenly_spaced,
    role_of,
    series_whole,
)
from listener.header import InstanceHeader
from triage.series_kind import is_sharp_kernel


def progress(
    numbers: list[int], positions: list[float] | None = None, expected: int | None = None
) -> SeriesProgress:
    series = SeriesProgress(expected=expected)
    for index, number in enumerate(numbers):
        series.add(number, positions[index] if positions is not None else None)
    return series


def axial(n: int, step: float = 5.0, start: float = -100.0) -> list[float]:
    return [start + i * step for i in range(n)]


# -- one series ------------------------------------------------------------------------------
def test_announced_count_reached_makes_series_whole_without_geometry() -> None:
    series = progress(list(range(1, 41)), expected=40)
    assert series_whole(series) == "announced count 40 arrived"


def test_announced_count_not_reached_outranks_contiguous_geometry() -> None:
    series = progress(list(range(1, 31)), axial(30), expected=40)
    assert series_whole(series) is None


def test_site_configured_count_is_used_when_nothing_is_announced() -> None:
    assert series_whole(progress(list(range(1, 25))), site_expected=24) is not None
    assert series_whole(progress(list(range(1, 24))), site_expected=24) is None


def test_contiguous_evenly_spaced_series_is_whole() -> None:
    reason = series_whole(progress(list(range(1, 13)), axial(12)))
    assert reason == "instances 1..12 contiguous and evenly spaced"


def test_arrival_order_does_not_matter() -> None:
    numbers = [5, 1, 3, 2, 4]
    positions = [axial(5)[n - 1] for n in numbers]
    assert series_whole(progress(numbers, positions)) is not None


def test_missing_instance_number_is_not_whole() -> None:
    numbers = [1, 2, 3, 5, 6]
    assert series_whole(progress(numbers, [axial(6)[n - 1] for n in numbers])) is None


def test_series_may_start_at_any_instance_number() -> None:
    # scanners number on from an earlier series (201..228) or skip the scout's number
    assert (
        series_whole(progress([2, 3, 4], axial(3))) == "instances 2..4 contiguous and evenly spaced"
    )
    assert series_whole(progress([201, 202, 204], axial(3))) is None


def test_gap_in_slice_positions_is_not_whole() -> None:
    positions = axial(10)
    positions[5:] = [p + 5.0 for p in positions[5:]]  # one slice's worth of table missing
    assert series_whole(progress(list(range(1, 11)), positions)) is None


def test_duplicate_slice_positions_are_not_whole() -> None:
    positions = axial(6)
    positions[3] = positions[2]
    assert series_whole(progress(list(range(1, 7)), positions)) is None
    assert not evenly_spaced([0.0, 0.0, 0.0])


def test_duplicate_instance_number_is_not_whole() -> None:
    series = progress([1, 2, 2, 3], axial(4))
    assert series.count == 4
    assert series_whole(series) is None


def test_missing_positions_are_not_whole() -> None:
    assert series_whole(progress(list(range(1, 6)))) is None


def test_spacing_within_tolerance_is_even() -> None:
    assert evenly_spaced([0.0, 5.0, 10.01, 14.99, 20.0])
    assert not evenly_spaced([0.0, 5.0, 10.0, 16.0, 21.0])
    assert evenly_spaced([3.0])


def test_descending_positions_are_even() -> None:
    positions = list(reversed(axial(8, step=2.5)))
    assert series_whole(progress(list(range(1, 9)), positions)) is not None


# -- gantry tilt -----------------------------------------------------------------------------
def tilted_header(index: int, tilt_degrees: float, step: float) -> InstanceHeader:
    """Slice ``index`` of a stack tilted about the x axis, stepping ``step`` mm along its normal."""
    t = math.radians(tilt_degrees)
    row, column = (1.0, 0.0, 0.0), (0.0, math.cos(t), math.sin(t))
    normal = (0.0, -math.sin(t), math.cos(t))
    origin = (-125.0, -125.0, -50.0)
    position = tuple(o + index * step * n for o, n in zip(origin, normal, strict=True))
    return InstanceHeader(
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_instance_uid=f"1.2.3.4.{index + 1}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        modality="CT",
        body_part="HEAD",
        series_description=None,
        study_description=None,
        series_number=1,
        instance_number=index + 1,
        image_position=position,  # type: ignore[arg-type]
        image_orientation=(*row, *column),
        images_in_acquisition=None,
        accession_number=None,
        patient_id=None,
        study_date=None,
    )


def test_position_along_normal_undoes_gantry_tilt() -> None:
    headers = [tilted_header(i, tilt_degrees=20.0, step=5.0) for i in range(4)]
    along = [h.position_along_normal for h in headers]
    assert along == pytest.approx([along[0] + 5.0 * i for i in range(4)])
    raw_z = [h.image_position[2] for h in headers]  # type: ignore[index]
    assert raw_z[1] - raw_z[0] == pytest.approx(5.0 * math.cos(math.radians(20.0)))


def test_tilted_series_is_whole_on_projected_positions_and_gap_is_found() -> None:
    headers = [tilted_header(i, tilt_degrees=25.0, step=3.0) for i in range(10)]
    whole = progress(
        [h.instance_number for h in headers], [h.position_along_normal for h in headers]
    )  # type: ignore[misc]
    assert series_whole(whole) is not None

    gapped = [tilted_header(i + (1 if i >= 6 else 0), 25.0, 3.0) for i in range(10)]
    numbers = list(range(1, 11))  # numbered 1..10 but a slice of table is missing
    assert series_whole(progress(numbers, [h.position_along_normal for h in gapped])) is None  # type: ignore[misc]


def test_position_without_orientation_falls_back_to_z() -> None:
    header = tilted_header(2, 0.0, 5.0)
    flat = InstanceHeader(**{**header.__dict__, "image_orientation": None})
    assert flat.position_along_normal == header.image_position[2]  # type: ignore[index]
    none = InstanceHeader(**{**header.__dict__, "image_position": None})
    assert none.position_along_normal is None


# -- the study decision ------------------------------------------------------------------------
WHOLE = progress(list(range(1, 4)), axial(3))
PARTIAL = progress([1, 3], [axial(3)[0], axial(3)[2]])


def test_study_of_whole_series_completes_after_quiet_seconds() -> None:
    early = decide(
        now=100.5, last_received=100.0, series=[WHOLE], stable_seconds=60, quiet_seconds=2
    )
    late = decide(
        now=102.0, last_received=100.0, series=[WHOLE], stable_seconds=60, quiet_seconds=2
    )
    assert not early.complete and early.reason == "waiting"
    assert late.complete and "series whole" in late.reason


def test_one_partial_series_holds_the_study_until_idle_timer() -> None:
    kwargs = {"last_received": 0.0, "series": [WHOLE, PARTIAL], "stable_seconds": 30.0}
    assert not decide(now=29.9, quiet_seconds=1, **kwargs).complete  # type: ignore[arg-type]
    done = decide(now=30.0, quiet_seconds=1, **kwargs)  # type: ignore[arg-type]
    assert done.complete and "idle for 30.0s" in done.reason


def test_idle_timer_completes_even_without_any_series_known() -> None:
    assert decide(now=10, last_received=0, series=[], stable_seconds=10, quiet_seconds=0).complete
    assert not decide(
        now=9, last_received=0, series=[], stable_seconds=10, quiet_seconds=0
    ).complete


def test_site_expected_count_reaches_the_study_decision() -> None:
    series = progress([1, 2, 3])  # no geometry at all
    common = {"now": 5.0, "last_received": 0.0, "series": [series], "stable_seconds": 60.0}
    assert decide(quiet_seconds=1, site_expected=3, **common).complete  # type: ignore[arg-type]
    assert not decide(quiet_seconds=1, site_expected=0, **common).complete  # type: ignore[arg-type]


def test_decision_names_the_rule_that_completed_the_study() -> None:
    counted = SeriesProgress(expected=3)
    site = SeriesProgress()
    geometric = progress(list(range(1, 7)), axial(6))
    for n in (1, 2, 3):
        counted.add(n, None)
        site.add(n, None)
    timers = {"stable_seconds": 30.0, "quiet_seconds": 5.0}

    def basis(series: list[SeriesProgress], idle: float, site_expected: int = 0):
        return decide(
            now=idle, last_received=0.0, series=series, site_expected=site_expected, **timers
        ).basis

    assert basis([counted], idle=1.0) is CompletionBasis.ANNOUNCED_COUNT
    assert basis([counted, site], idle=1.0, site_expected=3) is CompletionBasis.SITE_COUNT
    assert basis([counted, geometric], idle=1.0) is None  # geometry waits the quiet time
    assert basis([counted, geometric], idle=5.0) is CompletionBasis.GEOMETRY
    assert basis([geometric], idle=30.0) is CompletionBasis.IDLE_TIMER


# -- thickness: two-part protocols, overlap, gaps ----------------------------------------------
CT = "1.2.840.10008.5.1.4.1.1.2"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def with_thickness(
    numbers: list[int], positions: list[float], thickness: list[float], traits: SeriesTraits | None
) -> SeriesProgress:
    series = SeriesProgress(traits=traits)
    for number, position, mm in zip(numbers, positions, thickness, strict=True):
        series.add(number, position, mm)
    return series


def two_part(first: int = 14, second: int = 14) -> tuple[list[float], list[float]]:
    """The GE layout: ``first`` slices 4 mm apart (4 mm thick), then ``second`` at 7 mm."""
    positions = [4.0 * i for i in range(first)]
    top = positions[-1] + 1.1  # the second part starts overlapping the first, as on the GE
    positions += [top + 7.0 * i for i in range(second)]
    return positions, [4.0] * first + [7.0] * second


def test_two_part_series_is_whole_though_not_evenly_spaced() -> None:
    positions, thickness = two_part()
    assert not evenly_spaced(positions)
    series = with_thickness(list(range(1, 29)), positions, thickness, None)
    assert series_whole(series) == "instances 1..28 contiguous, slices cover without a gap"


def test_two_part_series_missing_a_middle_slice_is_not_whole() -> None:
    positions, thickness = two_part()
    numbers = list(range(1, 29))
    del numbers[20], positions[20], thickness[20]
    assert series_whole(with_thickness(numbers, positions, thickness, None)) is None
    renumbered = list(range(1, 28))  # numbered without a hole, but a 7 mm slab is missing
    assert series_whole(with_thickness(renumbered, positions, thickness, None)) is None


def test_vertex_first_series_is_whole() -> None:
    positions, thickness = two_part()
    numbers = list(range(1, 29))
    series = with_thickness(numbers, positions[::-1], thickness[::-1], None)
    assert series_whole(series) is not None


def test_step_larger_than_thickness_is_a_gap_and_overlap_is_not() -> None:
    assert covered_without_gap([(0.0, 5.0), (5.4, 5.0), (10.8, 5.0)])  # within 10 %
    assert not covered_without_gap([(0.0, 5.0), (5.6, 5.0)])
    assert covered_without_gap([(0.0, 5.0), (2.5, 5.0), (5.0, 5.0)])  # overlapping recon
    assert not covered_without_gap([(0.0, 5.0), (0.0, 5.0)])  # duplicate place
    assert covered_without_gap([(0.0, 4.0), (5.5, 7.0)])  # mean of 4 and 7 mm


def test_thin_slices_spread_apart_are_not_whole_though_even() -> None:
    # 1 mm slices every 5 mm (a sparse preview) cover a fifth of the range: not a volume
    series = with_thickness(list(range(1, 6)), axial(5), [1.0] * 5, None)
    assert series_whole(series) is None


# -- which series decide -------------------------------------------------------------------------
def role(traits: SeriesTraits, count: int = 20) -> SeriesRole:
    series = SeriesProgress(traits=traits)
    for n in range(1, count + 1):
        series.add(n, float(n))
    return role_of(series)


def test_roles_of_what_scanners_send_besides_the_head_series() -> None:
    read = SeriesTraits(CT, image_type=("ORIGINAL", "PRIMARY", "AXIAL"), orientation=AXIAL)
    assert role(read) is SeriesRole.READ
    assert role(read, count=2) is SeriesRole.LOCALIZER  # one or two images
    scout = SeriesTraits(
        CT, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), orientation=(0, 1, 0, 0, 0, -1)
    )
    assert role(scout, count=3) is SeriesRole.LOCALIZER
    sc = SeriesTraits("1.2.840.10008.5.1.4.1.1.7", image_type=("DERIVED", "SECONDARY"))
    assert role(sc) is SeriesRole.SECONDARY_CAPTURE
    pages = SeriesTraits(CT, orientation=None, has_position=False)
    assert role(pages) is SeriesRole.SECONDARY_CAPTURE  # no geometry
    sr = SeriesTraits("1.2.840.10008.5.1.4.1.1.88.67", is_image=False)
    assert role(sr) is SeriesRole.NON_IMAGE
    coronal = SeriesTraits(CT, image_type=("DERIVED", "SECONDARY"), orientation=(1, 0, 0, 0, 0, -1))
    assert role(coronal) is SeriesRole.REFORMAT
    sagittal = SeriesTraits(CT, orientation=(0, 1, 0, 0, 0, -1))
    assert role(sagittal) is SeriesRole.REFORMAT
    bone = SeriesTraits(CT, orientation=AXIAL, kernel="BONEPLUS")
    assert role(bone) is SeriesRole.BONE_KERNEL
    assert role(SeriesTraits(CT, orientation=AXIAL, kernel="STD+")) is SeriesRole.READ


def test_gantry_tilted_series_is_still_axial() -> None:
    t = math.radians(25.0)
    tilted = SeriesTraits(CT, orientation=(1, 0, 0, 0, math.cos(t), -math.sin(t)))
    assert role(tilted) is SeriesRole.READ


def test_bone_kernel_names() -> None:
    sharp = ["BONE", "BONEPLUS", "EDGE", "LUNG", "H60s", "H70h", "Hr64", "Br64\\3", "Qr69", "J70"]
    soft = ["STD+", "STANDARD", "SOFT", "UB", "H30s", "Hr38", "Br40", "FC26", "", None]
    assert all(is_sharp_kernel(k) for k in sharp)
    assert not any(is_sharp_kernel(k) for k in soft)


def test_localizer_dose_pages_and_reformat_do_not_hold_the_study() -> None:
    head = with_thickness(list(range(1, 29)), axial(28), [5.0] * 28, None)
    scout = SeriesProgress(traits=SeriesTraits(CT, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")))
    scout.add(1, 0.0)
    dose = SeriesProgress(traits=SeriesTraits("1.2.840.10008.5.1.4.1.1.7", has_position=False))
    dose.add(1, None)
    dose.add(5, None)  # pages 1 and 5: never whole
    common = {"last_received": 0.0, "stable_seconds": 60.0, "quiet_seconds": 3.0}
    done = decide(now=3.0, series=[scout, head, dose], **common)  # type: ignore[arg-type]
    assert done.complete and done.basis is CompletionBasis.GEOMETRY
    assert "2 not deciding: localizer, secondary_capture" in done.reason
    partial = with_thickness([1, 2, 4], axial(4)[:2] + axial(4)[3:], [5.0] * 3, None)
    assert not decide(now=3.0, series=[scout, partial, dose], **common).complete  # type: ignore[arg-type]


def test_study_of_only_pages_waits_for_the_idle_timer() -> None:
    dose = SeriesProgress(traits=SeriesTraits("1.2.840.10008.5.1.4.1.1.7", has_position=False))
    dose.add(1, None)
    dose.add(5, None)
    common = {"last_received": 0.0, "series": [dose], "stable_seconds": 60.0, "quiet_seconds": 3.0}
    assert not decide(now=59.0, **common).complete  # type: ignore[arg-type]
    assert decide(now=60.0, **common).basis is CompletionBasis.IDLE_TIMER  # type: ignore[arg-type]


def test_open_association_holds_the_geometry_rule_but_not_the_idle_timer() -> None:
    head = with_thickness(list(range(1, 11)), axial(10), [5.0] * 10, None)
    common = {"last_received": 0.0, "stable_seconds": 60.0, "quiet_seconds": 1.0}
    assert decide(now=5.0, series=[head], **common).complete  # type: ignore[arg-type]
    held = decide(now=5.0, series=[head], sender_connected=True, **common)  # type: ignore[arg-type]
    assert not held.complete
    late = decide(now=60.0, series=[head], sender_connected=True, **common)  # type: ignore[arg-type]
    assert late.basis is CompletionBasis.IDLE_TIMER


def test_an_announced_count_completes_even_while_the_association_stays_open() -> None:
    """The count rule is kept as it was: a PACS that sends several studies over one
    long association must not make each wait for the idle timer."""
    counted = progress([1, 2, 3], expected=3)
    common = {"last_received": 0.0, "stable_seconds": 60.0, "quiet_seconds": 1.0}
    done = decide(now=0.6, series=[counted], sender_connected=True, **common)  # type: ignore[arg-type]
    assert done.complete and done.basis is CompletionBasis.ANNOUNCED_COUNT
    short = progress([1, 2], expected=3)
    assert not decide(now=5.0, series=[short], sender_connected=True, **common).complete  # type: ignore[arg-type]
