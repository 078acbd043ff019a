"""Series selection picks the axial head series, never the localizer or dose screenshots;
after decoding, it refuses a series that lost too many slices or a slab of them."""

from worker.series_selection import (
    CT_IMAGE_STORAGE,
    SeriesCandidate,
    SliceFacts,
    axial_tilt_degrees,
    select_series,
    why_not_after_drops,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _series(uid, n, spacing, orientation=AXIAL, sop=CT_IMAGE_STORAGE, modality="CT"):
    slices = [SliceFacts(sop, orientation, i * spacing) for i in range(n)]
    return SeriesCandidate(uid, modality, uid, slices)


def test_localizer_and_screenshots_are_not_chosen():
    localizer = _series("localizer", 3, 0.0, orientation=CORONAL)
    dose = _series("dose", 2, 0.0, sop=SECONDARY_CAPTURE)
    head = _series("head", 30, 5.0)
    chosen = select_series([localizer, dose, head])
    assert chosen.series_uid == "head"
    assert "30 axial slices" in chosen.reason


def test_thinnest_series_with_full_coverage_wins():
    thick = _series("thick", 30, 5.0)  # 145 mm
    thin = _series("thin", 146, 1.0)  # 145 mm
    partial_thin = _series("partial", 40, 0.625)  # 24 mm only
    assert select_series([thick, thin, partial_thin]).series_uid == "thin"


def test_gantry_tilt_is_still_axial():
    tilt = 20.0
    import math

    c, s = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
    tilted = (1.0, 0.0, 0.0, 0.0, c, s)
    assert abs(axial_tilt_degrees(tilted) - tilt) < 1e-6
    assert select_series([_series("tilted", 28, 4.8, orientation=tilted)]).series_uid == "tilted"


def test_no_usable_series_says_why():
    chosen = select_series([_series("mr", 30, 5.0, modality="MR")])
    assert chosen.series_uid is None
    assert "modality MR" in chosen.reason


def _facts(n, spacing=5.0):
    return [SliceFacts(CT_IMAGE_STORAGE, AXIAL, i * spacing, f"1.2.{i}") for i in range(n)]


def test_one_dropped_slice_leaves_the_series_fit_to_judge():
    assert why_not_after_drops(_facts(30), {"1.2.14"}) is None
    assert why_not_after_drops(_facts(30), set()) is None


def test_more_than_a_tenth_dropped_is_refused_with_the_count():
    why = why_not_after_drops(_facts(30), {"1.2.3", "1.2.9", "1.2.15", "1.2.21"})
    assert why == "4 of 30 slices dropped, more than 10%"
    assert why_not_after_drops(_facts(30), {"1.2.3", "1.2.9", "1.2.15"}) is None


def test_too_few_decodable_slices_are_refused():
    why = why_not_after_drops(_facts(6), {"1.2.2"}, min_slices=6)
    assert why == "5 decodable slices < 6"


def test_two_adjacent_dropped_slices_leave_a_gap_too_wide():
    why = why_not_after_drops(_facts(40), {"1.2.10", "1.2.11"})
    assert why is not None and "15.0 mm gap" in why


def test_dropped_end_slices_leave_no_gap():
    assert why_not_after_drops(_facts(40), {"1.2.0", "1.2.1"}) is None
