"""Which slices a report names: pure choices over stored slice scores."""

from __future__ import annotations

import pytest

from worker.reports.key_slices import (
    key_images_slices,
    key_slice_uids,
    lead_classes,
    top_slices_for_class,
)

NAMES = ("any", "subdural", "ischemic")


def _scores(rows: list[dict[str, float]]) -> list[dict[str, object]]:
    return [
        {"index": i, "sop_instance_uid": f"1.2.3.{i}", "instance_number": i + 1, "scores": row}
        for i, row in enumerate(rows)
    ]


SCORES = _scores(
    [
        {"any": 0.2, "subdural": 0.1, "ischemic": 0.9},
        {"any": 0.9, "subdural": 0.8, "ischemic": 0.1},
        {"any": 0.95, "subdural": 0.7, "ischemic": 0.2},
        {"any": 0.5, "subdural": 0.8, "ischemic": 0.3},
    ]
)


def test_top_slices_are_highest_first_with_ties_to_the_lower_index() -> None:
    top = top_slices_for_class(SCORES, "subdural", 3)
    assert [s.sop_instance_uid for s in top] == ["1.2.3.1", "1.2.3.3", "1.2.3.2"]
    assert [s.score for s in top] == [0.8, 0.8, 0.7]


def test_any_gives_way_to_a_flagged_subtype_and_nothing_flagged_takes_the_most_probable() -> None:
    assert lead_classes(NAMES, {"any": True, "subdural": True}, {}) == ["subdural"]
    assert lead_classes(NAMES, {"any": True}, {}) == ["any"]
    assert lead_classes(NAMES, {}, {"any": 0.1, "subdural": 0.3, "ischemic": 0.2}) == ["subdural"]
    assert lead_classes(NAMES, {}, {}) == []


def test_key_image_slices_rank_by_the_best_lead_class_and_show_it() -> None:
    flags = {"subdural": True, "ischemic": True}
    chosen = key_images_slices(SCORES, NAMES, flags, {}, 2)
    assert [(s.sop_instance_uid, s.class_name) for s in chosen] == [
        ("1.2.3.0", "ischemic"),
        ("1.2.3.1", "subdural"),
    ]


def test_key_slice_uids_cover_key_images_and_each_flagged_findings_top_slices() -> None:
    uids = key_slice_uids(SCORES, NAMES, {"subdural": True, "ischemic": True}, {}, 1)
    assert uids == ["1.2.3.0", "1.2.3.1"]
    assert key_slice_uids([], NAMES, {"subdural": True}, {}, 3) == []


def test_k_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="k"):
        top_slices_for_class(SCORES, "any", 0)
