"""Operating points: per-class thresholds reaching a target sensitivity on validation data.

Why sensitivity: a triage tool exists to not miss bleeds and strokes; the threshold is the
highest one that still catches at least ``target`` of the validation positives, which keeps
false alarms as low as that allows. The thresholds are stored in the bundle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float = 0.95) -> float:
    """Threshold reaching ``target`` sensitivity on ``(y, p)``; 0.5 when there are no positives.

    The highest ``t`` with ``recall(p >= t) >= target`` sits exactly on a validation positive;
    with the few positives of a validation split that over-fits. The returned threshold is
    moved halfway, in log-odds, towards the highest negative score below it, so the margin is
    shared between the classes. It still reaches the target on the validation data.

    Raises
    ------
    ValueError
        If ``target`` is not in (0, 1].
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target: sensitivity must be in (0, 1] (got {target})")
    known = ~np.isnan(y)
    positives = np.sort(p[known & (y > 0.5)])
    if positives.size == 0:
        return DEFAULT_THRESHOLD
    allowed_misses = math.floor((1.0 - target) * positives.size + 1e-9)
    highest = float(positives[allowed_misses])
    negatives = p[known & (y < 0.5)]
    below = negatives[negatives < highest]
    if below.size == 0:
        return highest
    return float(_sigmoid(0.5 * (_logit(highest) + _logit(float(below.max())))))


def _logit(value: float) -> float:
    value = min(max(value, 1e-7), 1 - 1e-7)
    return math.log(value / (1 - value))


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def thresholds_for_sensitivity(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], target: float = 0.95
) -> dict[str, float]:
    """Per-class thresholds; classes without validation positives get 0.5 and a warning."""
    out = {}
    for j, name in enumerate(class_names):
        column = y_true[:, j]
        if not np.any(column[~np.isnan(column)] > 0.5):
            logger.warning("no validation positives for %s; threshold left at 0.5", name)
        out[name] = threshold_for_sensitivity(column, y_prob[:, j], target)
    return out
