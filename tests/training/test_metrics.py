"""Our metrics agree with scikit-learn on fixed inputs; thresholds reach the target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from training.metrics import per_class_metrics, weighted_log_loss
from training.thresholds import threshold_for_sensitivity

Y = np.array([[1, 0], [0, 0], [1, 1], [0, 1], [1, 0], [0, 0], [1, 1], [0, 0]], dtype=np.float32)
P = np.array(
    [
        [0.9, 0.2],
        [0.3, 0.1],
        [0.6, 0.8],
        [0.55, 0.4],
        [0.2, 0.3],
        [0.1, 0.2],
        [0.8, 0.9],
        [0.7, 0.6],
    ],
    dtype=np.float32,
)
NAMES = ("any", "subdural")


def test_per_class_metrics_match_sklearn() -> None:
    out = per_class_metrics(Y, P, NAMES, {"any": 0.5, "subdural": 0.35})
    for j, name in enumerate(NAMES):
        t = out[name]["threshold"]
        pred = (P[:, j] >= t).astype(int)
        assert out[name]["auc"] == pytest.approx(roc_auc_score(Y[:, j], P[:, j]))
        assert out[name]["accuracy"] == pytest.approx(accuracy_score(Y[:, j], pred))
        assert out[name]["precision"] == pytest.approx(precision_score(Y[:, j], pred))
        assert out[name]["recall"] == pytest.approx(recall_score(Y[:, j], pred))
        assert out[name]["f1"] == pytest.approx(f1_score(Y[:, j], pred))
    assert out["any"]["confusion_matrix"] == [[2, 2], [1, 3]]


def test_weighted_log_loss_matches_sklearn_with_rsna_weights() -> None:
    per_class = [log_loss(Y[:, j], P[:, j]) for j in range(2)]
    expected = (2 * per_class[0] + 1 * per_class[1]) / 3
    assert weighted_log_loss(Y, P, NAMES) == pytest.approx(expected, rel=1e-6)


def test_unknown_labels_are_left_out() -> None:
    y = Y.copy()
    y[:4, 1] = np.nan
    out = per_class_metrics(y, P, NAMES)
    assert out["subdural"]["n"] == 4
    assert out["subdural"]["auc"] == pytest.approx(roc_auc_score(Y[4:, 1], P[4:, 1]))
    loss = weighted_log_loss(y, P, NAMES)
    known = [(i, j) for i in range(8) for j in range(2) if not math.isnan(y[i, j])]
    w = {0: 2.0, 1: 1.0}
    total = sum(w[j] * log_loss([Y[i, j]], [P[i, j]], labels=[0, 1]) for i, j in known) / sum(
        w[j] for _, j in known
    )
    assert loss == pytest.approx(total, rel=1e-6)


def test_auc_is_none_when_one_label_value() -> None:
    out = per_class_metrics(np.zeros((3, 1)), np.array([[0.1], [0.2], [0.3]]), ("any",))
    assert out["any"]["auc"] is None


def test_threshold_reaches_target_sensitivity() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(float)
    p = np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1)
    t = threshold_for_sensitivity(y, p, 0.95)
    recall = ((p >= t) & (y == 1)).sum() / (y == 1).sum()
    assert recall >= 0.95
    # It lies between the highest working cut-off and the next lower negative score.
    positives = np.sort(p[y == 1])
    highest = positives[int(np.floor(0.05 * positives.size))]
    next_negative = p[(y == 0) & (p < highest)].max()
    assert next_negative < t <= highest
    higher = positives[positives > highest][0]
    assert ((p >= higher) & (y == 1)).sum() / (y == 1).sum() < 0.95


def test_threshold_splits_the_margin_when_classes_separate() -> None:
    y = np.array([0, 0, 1, 1], dtype=float)
    p = np.array([0.1, 0.2, 0.8, 0.9])
    t = threshold_for_sensitivity(y, p, 0.95)
    assert t == pytest.approx(0.5)  # halfway in log-odds between 0.2 and 0.8
