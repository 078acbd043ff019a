"""Which slices a report points at: the ones the model scored highest.

Pure functions over the stored slice scores (``Prediction.slice_scores``: one entry per
slice in patient-axis order with ``sop_instance_uid``, ``index`` and ``scores`` per class),
so the SR, the key images and the caller that loads headers all pick the same slices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KeySlice:
    """One chosen slice: where it is, which class it is shown for, and its score."""

    index: int  # position in the ordered series (the model's input order)
    sop_instance_uid: str
    class_name: str
    score: float


def _score(entry: Mapping[str, Any], class_name: str) -> float:
    return float(entry.get("scores", {}).get(class_name, 0.0))


def top_slices_for_class(
    slice_scores: Sequence[Mapping[str, Any]], class_name: str, k: int
) -> list[KeySlice]:
    """The ``k`` slices with the highest score of ``class_name``, highest first.

    Ties go to the lower slice index, so the choice is the same every time.
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1 (got {k})")
    ranked = sorted(
        enumerate(slice_scores), key=lambda item: (-_score(item[1], class_name), item[0])
    )
    return [
        KeySlice(
            int(entry.get("index", position)),
            str(entry["sop_instance_uid"]),
            class_name,
            _score(entry, class_name),
        )
        for position, entry in ranked[:k]
    ]


def lead_classes(
    class_names: Sequence[str], flags: Mapping[str, bool], probabilities: Mapping[str, float]
) -> list[str]:
    """The classes key images are chosen for: the flagged ones, else the most probable one.

    ``any`` is left out when another class is flagged too: its evidence is the subtypes'.
    """
    flagged = [name for name in class_names if flags.get(name)]
    if len(flagged) > 1 and "any" in flagged:
        # A flagged subtype's heat-map says more than "any hemorrhage" on the same slices.
        flagged.remove("any")
    if flagged:
        return flagged
    known = [name for name in class_names if name in probabilities]
    return [max(known, key=lambda name: probabilities[name])] if known else []


def key_images_slices(
    slice_scores: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    flags: Mapping[str, bool],
    probabilities: Mapping[str, float],
    k: int,
) -> list[KeySlice]:
    """The ``k`` slices to render as key images, each with the class it is shown for.

    A slice's rank is its highest score among the lead classes (:func:`lead_classes`), and
    it is shown for that class; highest first, ties to the lower index.
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1 (got {k})")
    leads = lead_classes(class_names, flags, probabilities)
    if not leads or not slice_scores:
        return []
    best = []
    for position, entry in enumerate(slice_scores):
        name = max(leads, key=lambda c: (_score(entry, c), -leads.index(c)))
        best.append((-_score(entry, name), position, entry, name))
    best.sort(key=lambda item: (item[0], item[1]))
    return [
        KeySlice(int(entry.get("index", position)), str(entry["sop_instance_uid"]), name, -neg)
        for neg, position, entry, name in best[:k]
    ]


def key_slice_uids(
    slice_scores: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    flags: Mapping[str, bool],
    probabilities: Mapping[str, float],
    k: int,
) -> list[str]:
    """SOP Instance UIDs of every slice a report names: load these headers for the input.

    The union of the key-image slices and, for each flagged class, its top ``k`` slices
    (the SR's source images of that finding), in first-named order.
    """
    chosen = key_images_slices(slice_scores, class_names, flags, probabilities, k)
    for name in class_names:
        if flags.get(name):
            chosen.extend(top_slices_for_class(slice_scores, name, k))
    return list(dict.fromkeys(s.sop_instance_uid for s in chosen))
