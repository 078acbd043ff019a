"""Temperature scaling: fixes over- and under-confidence, never sharpens a separable split
without bound, and keeps every ranking."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import (
    T_MIN,
    apply_temperatures,
    expected_calibration_error,
    fit_temperature,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_overconfident_scores_are_softened_and_ece_falls() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < _sigmoid(z)).astype(float)
    overconfident = _sigmoid(3 * z)  # the true temperature is 3
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(3.0, rel=0.1)
    fixed = apply_temperatures(overconfident[:, None], ["any"], {"any": t})[:, 0]
    assert expected_calibration_error(y, fixed) < 0.5 * expected_calibration_error(y, overconfident)
    order = np.argsort(overconfident, kind="stable")
    assert np.all(np.diff(fixed[order]) >= 0)  # ranking kept (monotone map)


def test_separated_validation_never_sharpens_and_few_labels_keep_one() -> None:
    y = np.repeat([0.0, 1.0], 30)
    p = np.where(y == 1, 0.7, 0.3)
    assert fit_temperature(y, p) == pytest.approx(1.0, abs=1e-3)  # separated: no sharpening
    y_mixed = np.concatenate([y, [0.0, 1.0]])
    p_mixed = np.concatenate([p, [0.7, 0.3]])  # two errors: the split can be sharpened a bit
    assert T_MIN <= fit_temperature(np.tile(y_mixed, 5), np.tile(p_mixed, 5)) < 1.0
    assert fit_temperature(np.array([0, 0, 0, 1, 1.0]), np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == 1.0
    assert fit_temperature(np.array([np.nan, 1.0]), np.array([0.5, 0.5])) == 1.0
