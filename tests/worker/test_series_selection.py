"""Series selection picks the axial head series, never the localizer or dose screenshots."""

from worker.series_selection import (
    CT_IMAGE_STORAGE,
    SeriesCandidate,
    SliceFacts,
    axial_tilt_degrees,
    select_series,
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
