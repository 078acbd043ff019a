"""The closed vocabulary of finding classes, shared by datasets, models, bundles and reports.

One home for the class names so that the CSV reader, the bundle, the database and the reports
all speak alike. ``any`` follows the RSNA 2019 definition: any intracranial hemorrhage. Ischemic
stroke is not a hemorrhage and therefore never implies ``any``.
"""

from __future__ import annotations

from typing import Final

HEMORRHAGE_SUBTYPES: Final[tuple[str, ...]] = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)
"""The five RSNA hemorrhage subtypes, in RSNA column order."""

CLASS_NAMES: Final[tuple[str, ...]] = ("any", *HEMORRHAGE_SUBTYPES, "ischemic")
"""Every class the models predict, in output-column order."""

LESION_NAMES: Final[tuple[str, ...]] = (*HEMORRHAGE_SUBTYPES, "ischemic")
"""Classes that name a drawable lesion; ``any`` is derived from the subtypes."""

RSNA_LOG_LOSS_WEIGHTS: Final[dict[str, float]] = {"any": 2.0}
"""Weights of the RSNA weighted multi-label log loss; classes not listed weigh 1."""

DISCLAIMER_SYNTHETIC: Final[str] = "synthetic demo — not for clinical use"
"""Label carried by every bundle trained on phantoms, shown wherever the bundle is shown."""


def derive_any(labels: dict[str, int]) -> dict[str, int]:
    """Return ``labels`` with ``any`` set from the hemorrhage subtypes when it is missing.

    ``any`` is only derived when every subtype is known, or when one subtype is positive;
    otherwise it stays unknown, because a missing label means unknown, not negative.

    Parameters
    ----------
    labels
        Known labels of one slice or study, class name to 0/1.

    Returns
    -------
    dict[str, int]
        A new dictionary; the input is not modified.
    """
    out = dict(labels)
    if "any" in out:
        return out
    known = [out[name] for name in HEMORRHAGE_SUBTYPES if name in out]
    if any(known):
        out["any"] = 1
    elif len(known) == len(HEMORRHAGE_SUBTYPES):
        out["any"] = 0
    return out
