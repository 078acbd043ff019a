"""Classification metrics per class, and the RSNA weighted multi-label log loss.

Why here and not only scikit-learn: labels may be unknown (NaN) per class, so every metric is
computed on the known entries of its own column; AUC and confusion matrices come from
scikit-learn, the RSNA weighted log loss (``any`` weighs 2, the rest 1) is ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

from training.calibration import expected_calibration_error
from training.classes import RSNA_LOG_LOSS_WEIGHTS

EPS = 1e-7


def _known(y_true: np.ndarray, y_prob: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    mask = ~np.isnan(y_true[:, j])
    return y_true[mask, j].astype(int), y_prob[mask, j]


def class_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN when only one label value is present (AUC is undefined then)."""
    if y.size == 0 or y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, p))


def mean_auc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean AUC over the classes where it is defined (NaN when none is)."""
    values = [class_auc(*_known(y_true, y_prob, j)) for j in range(y_true.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def weighted_log_loss(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    class_names: Sequence[str],
    weights: Mapping[str, float] = RSNA_LOG_LOSS_WEIGHTS,
) -> float:
    """RSNA weighted multi-label log loss over known labels.

    ``sum(w_c * BCE_ic) / sum(w_c)`` over every known (sample, class) pair, with ``w_any = 2``
    and 1 otherwise; with all labels known this equals the RSNA 2019 competition metric.
    Probabilities are clipped to ``[1e-7, 1 - 1e-7]``.
    """
    w = np.array([weights.get(name, 1.0) for name in class_names], dtype=np.float64)
    known = ~np.isnan(y_true)
    y = np.nan_to_num(y_true, nan=0.0).astype(np.float64)
    p = np.clip(y_prob.astype(np.float64), EPS, 1 - EPS)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    weight = known * w[None, :]
    total = weight.sum()
    return float((bce * weight).sum() / total) if total else math.nan


def per_class_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    class_names: Sequence[str],
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Accuracy, precision, recall (sensitivity), specificity, F1, AUC and confusion matrix.

    Parameters
    ----------
    y_true
        ``(N, C)`` 0/1 with NaN for unknown.
    y_prob
        ``(N, C)`` probabilities.
    thresholds
        Decision threshold per class (default 0.5); predicted positive when ``p >= t``.

    Returns
    -------
    dict
        Class name to metrics; ``confusion_matrix`` is ``[[TN, FP], [FN, TP]]``. Undefined
        values (no positives, say) are None.
    """
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(class_names):
        y, p = _known(y_true, y_prob, j)
        t = float((thresholds or {}).get(name, 0.5))
        pred = (p >= t).astype(int)
        tn, fp, fn, tp = (
            confusion_matrix(y, pred, labels=[0, 1]).ravel() if y.size else (0, 0, 0, 0)
        )

        def ratio(a: float, b: float) -> float | None:
            return float(a / b) if b else None

        precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and (precision + recall) > 0
            else (0.0 if precision is not None and recall is not None else None)
        )
        auc = class_auc(y, p)
        out[name] = {
            "n": int(y.size),
            "positives": int(y.sum()),
            "threshold": t,
            "auc": None if math.isnan(auc) else auc,
            "accuracy": ratio(tp + tn, y.size),
            "precision": precision,
            "recall": recall,
            "specificity": ratio(tn, tn + fp),
            "f1": f1,
            "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        }
    return out


def level_report(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    class_names: Sequence[str],
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The report block for one level (study or slice): AUC map, weighted log loss, expected
    calibration error per class, details."""
    per_class = per_class_metrics(y_true, y_prob, class_names, thresholds)
    ece = {
        name: expected_calibration_error(y_true[:, j], y_prob[:, j])
        for j, name in enumerate(class_names)
    }
    return {
        "n": int(y_true.shape[0]),
        "auc": {name: per_class[name]["auc"] for name in class_names},
        "weighted_log_loss": weighted_log_loss(y_true, y_prob, class_names),
        "ece": ece,
        "per_class": per_class,
    }
