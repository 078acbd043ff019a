"""From series predictions to study predictions.

Why max: a study is positive for a class when any of its slices is, so its probability is the
highest of its series' probabilities (several series of one study, e.g. a thin and a thick
reconstruction, must not dilute each other).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from training.datasets.records import pooled_labels


def studies_from_series(
    study_uids: Sequence[str],
    series_probs: np.ndarray,
    series_labels: np.ndarray,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Group series rows by study: probabilities by maximum, labels pooled (NaN unknown).

    Returns
    -------
    tuple
        Study UIDs (first-seen order), ``(S, C)`` probabilities, ``(S, C)`` labels.
    """
    rows: dict[str, list[int]] = defaultdict(list)
    for index, uid in enumerate(study_uids):
        rows[uid].append(index)
    uids = list(rows)
    probs = np.stack([series_probs[rows[u]].max(axis=0) for u in uids]) if uids else series_probs
    labels = (
        np.stack([pooled_labels(series_labels[rows[u]]) for u in uids]) if uids else series_labels
    )
    return uids, probs, labels
