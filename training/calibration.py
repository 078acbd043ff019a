"""Probability calibration: temperature scaling per class, and how well calibrated we are.

Why: a triage model that says 0.99 must be right about that often; the issue measured a bundle
that was confidently wrong (log loss 3.2). One temperature per class, fitted on validation
probabilities by minimising the log loss, divides the logits and keeps every ranking (so AUC
and the order of the worklist are unchanged) while pulling over-confident outputs back. The
expected calibration error (ECE) and the reliability curve report what is left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

EPS = 1e-7
T_MIN, T_MAX = 0.5, 20.0
"""Temperatures are searched in [0.5, 20]: a model may be softened a lot, sharpened at most 2x.

Why the floor: on a small validation split that the model separates perfectly, the log loss
falls without end as T goes to 0, and the first demo retrain fitted T = 0.05 (logits x 20),
which would make every error on new data a confident one."""
MIN_EACH = 5
"""Fewer positives or negatives than this on validation: the class keeps T = 1."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = np.clip(1.0 / (1.0 + np.exp(-z / temperature)), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """Temperature minimising the log loss of ``sigmoid(logit(p) / T)`` on known labels.

    A golden-section search over ``log T`` in [``T_MIN``, ``T_MAX``]; 1.0 when either label
    value has fewer than ``MIN_EACH`` examples (too little to calibrate against). When the
    validation scores separate the labels perfectly the log loss has no finite optimum below
    1, so the search starts at 1: such a split can justify softening, never sharpening.
    """
    known = ~np.isnan(y)
    yk, zk = y[known].astype(np.float64), _logit(p[known])
    positives = int(yk.sum())
    if positives < MIN_EACH or yk.size - positives < MIN_EACH:
        return 1.0
    separated = float(zk[yk == 0].max()) < float(zk[yk == 1].min())
    lo, hi = math.log(1.0 if separated else T_MIN), math.log(T_MAX)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(zk, yk, math.exp(a)), _nll(zk, yk, math.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(zk, yk, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(zk, yk, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def fit_temperatures(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
    """One temperature per class (columns of ``(N, C)`` labels and probabilities)."""
    return {name: fit_temperature(y_true[:, j], y_prob[:, j]) for j, name in enumerate(class_names)}


def apply_temperatures(
    y_prob: np.ndarray, class_names: Sequence[str], temperatures: Mapping[str, float]
) -> np.ndarray:
    """``(N, C)`` probabilities recalibrated per class (classes without a temperature kept)."""
    out = np.array(y_prob, dtype=np.float64, copy=True)
    for j, name in enumerate(class_names):
        t = float(temperatures.get(name, 1.0))
        if t != 1.0 and out.size:
            out[:, j] = 1.0 / (1.0 + np.exp(-_logit(out[:, j]) / t))
    return out


def reliability(
    y: np.ndarray, p: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of ``p``: mean predicted probability, observed frequency, count.

    Bins without samples hold NaN means and a count of 0.
    """
    known = ~np.isnan(y)
    y, p = y[known], p[known]
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums_p = np.bincount(index, weights=p, minlength=bins)
    sums_y = np.bincount(index, weights=y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums_p / counts, sums_y / counts, counts


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float | None:
    """ECE: count-weighted mean |observed - predicted| over equal-width bins (None if empty)."""
    mean_p, freq, counts = reliability(y, p, bins)
    total = counts.sum()
    if total == 0:
        return None
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(freq[filled] - mean_p[filled])) / total)
