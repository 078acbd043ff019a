"""The completion policy alone: counts, slice geometry and timers, with no network or database."""

from __future__ import annotations

import math

import pytest

from db.vocabulary import CompletionBasis
from listener.completion import SeriesProgress, decide, evenly_spaced, series_whole
from listener.header import InstanceHeader


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


def test_series_not_starting_at_one_is_not_whole() -> None:
    assert series_whole(progress([2, 3, 4], axial(3))) is None


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
