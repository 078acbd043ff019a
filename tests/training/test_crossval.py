"""k-fold cross-validation: every picture tested once by a model that never saw it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from training.cli import main
from training.config import load_config
from training.crossval import bootstrap_auc, kfold_splits
from training.datasets import read_folder_dataset

from .pictures import write_picture_folders


def test_folds_are_disjoint_stratified_and_cover_everything(tmp_path: Path) -> None:
    write_picture_folders(tmp_path / "pics", per_class=9)
    dataset = read_folder_dataset(tmp_path / "pics")
    splits = kfold_splits(dataset, 3, seed=0)
    tests = [set(s["test"]) for s in splits]
    every = {s.series_uid for s in dataset.series}
    assert set().union(*tests) == every and sum(len(t) for t in tests) == len(every)
    positives = {s.series_uid for s in dataset.series if s.slices[0].labels["any"] == 1}
    assert [len(t & positives) for t in tests] == [3, 3, 3]
    for split in splits:
        parts = [set(split[name]) for name in ("train", "val", "test")]
        assert set().union(*parts) == every and sum(map(len, parts)) == len(every)


def test_bootstrap_interval_brackets_the_auc() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0.0, 1.0], 40)
    p = y * 0.3 + rng.random(80) * 0.7
    low, high = bootstrap_auc(y, p, rounds=300)
    assert low < 0.85 < high and 0.5 < low < high <= 1.0
    assert bootstrap_auc(np.zeros(5), np.ones(5)) is None


def test_crossval_cli_prints_each_fold_and_the_pooled_auc(tmp_path: Path) -> None:
    write_picture_folders(tmp_path / "pics", per_class=9)
    recipe = Path(__file__).resolve().parents[2] / "training" / "recipes" / "real-pictures.toml"
    assert load_config(recipe).skip_patient_stage  # the shipped recipe parses
    out = tmp_path / "cv"
    result = CliRunner().invoke(
        main,
        [
            "crossval",
            "--config",
            str(recipe),
            "--folders",
            str(tmp_path / "pics"),
            "--folds",
            "3",
            "--out",
            str(out),
            "--set",
            "size=32",
            "--set",
            "image.epochs=2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [f"fold {k} (n=6)" in result.output for k in (1, 2, 3)] == [True] * 3
    assert "any: pooled AUC" in result.output and "95% CI" in result.output
    summary = json.loads((out / "crossval.json").read_text())
    assert summary["study"]["n"] == 18
    assert (out / "pooled" / "roc_study.png").exists()
    assert (out / "fold-3" / "report_test" / "report.json").exists()
