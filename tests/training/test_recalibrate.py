"""Recalibrating a finished run gives the run's own figures back, and new thresholds for a
new target, without training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import load_config
from training.recalibrate import recalibrate_run
from training.run import train_run

from .pictures import write_picture_folders
from .test_refusals import PICTURE_RECIPE


def test_recalibration_reproduces_the_run_and_moves_thresholds_with_the_target(
    tmp_path: Path,
) -> None:
    write_picture_folders(tmp_path / "pics", per_class=10)
    cfg = load_config(None, PICTURE_RECIPE | {"data.folders": str(tmp_path / "pics")})
    run = tmp_path / "run"
    result = train_run(cfg, run)
    first = json.loads((run / "thresholds.json").read_text())

    report = recalibrate_run(run)
    assert report["test"]["study"]["auc"] == pytest.approx(result.report["test"]["study"]["auc"])
    assert json.loads((run / "thresholds.json").read_text())["study"] == pytest.approx(
        first["study"]
    )

    recalibrate_run(run, target_sensitivity=0.5)
    moved = json.loads((run / "thresholds.json").read_text())
    assert moved["target_sensitivity"] == 0.5
    assert moved["study"]["any"] >= first["study"]["any"]
    assert json.loads((run / "config.resolved.json").read_text())["target_sensitivity"] == 0.5
