"""k-fold cross-validation: every item is tested once, by a model that never saw it.

Why: a set of 100 pictures gives a single test split of 15 and an AUC that moves by 0.1 with
the seed. With k folds each picture is scored once by the fold model that held it out; the
report gives each fold's AUC (its spread is the honest error bar of one small test set), the
pooled AUC over all held-out scores with a bootstrap 95 % interval, and the pooled ROC and
reliability plots. Folds are patient-wise and stratified on the labels, and each fold's
training part is split again into train and validation (for early stopping, calibration and
the operating point), so the test fold plays no part in any choice.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.config import TrainConfig
from training.datasets.records import LabelledDataset
from training.metrics import class_auc, level_report
from training.preflight import check_config, prepare_run_dir
from training.reports import json_safe, write_report
from training.run import load_dataset, train_run
from training.split import split_by_patient

logger = logging.getLogger(__name__)


def kfold_splits(dataset: LabelledDataset, folds: int, seed: int) -> list[dict[str, list[str]]]:
    """``folds`` patient-wise splits ``{"train", "val", "test"}`` of series UIDs.

    Patients are grouped by their label profile (which classes they are positive for),
    shuffled with the seed and dealt round-robin, so every fold gets its share of each
    profile; the val part of each fold comes from its non-test patients.

    Raises
    ------
    ValueError
        If ``folds`` is below 2 or above the number of patients.
    """
    by_patient: dict[str, list[str]] = defaultdict(list)
    profile: dict[str, tuple[int, ...]] = {}
    labels = np.nan_to_num(dataset.series_labels(), nan=0.0)
    for row, series in enumerate(dataset.series):
        by_patient[series.patient_id].append(series.series_uid)
        seen = profile.get(series.patient_id, (0,) * labels.shape[1])
        profile[series.patient_id] = tuple(
            max(a, int(b)) for a, b in zip(seen, labels[row], strict=True)
        )
    if not 2 <= folds <= len(by_patient):
        raise ValueError(f"folds: must be in [2, {len(by_patient)}] (got {folds})")
    rng = np.random.default_rng(seed)
    dealt: list[list[str]] = [[] for _ in range(folds)]
    cursor = 0
    groups: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for patient in sorted(by_patient):
        groups[profile[patient]].append(patient)
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        for patient in members:
            dealt[cursor % folds].append(patient)
            cursor += 1
    splits = []
    for k in range(folds):
        test = [uid for p in dealt[k] for uid in by_patient[p]]
        rest = dataset.subset(
            uid for j in range(folds) if j != k for p in dealt[j] for uid in by_patient[p]
        )
        # Validation: about one fold's size of the non-test part, at most 30 %.
        inner = split_by_patient(rest, min(0.3, 1.0 / (folds - 1)), 0.0, seed + k)
        splits.append({"train": inner["train"], "val": inner["val"], "test": test})
    return splits


@dataclass
class FoldResult:
    """One fold: its test AUC per class and its held-out study labels and probabilities."""

    fold: int
    auc: dict[str, float | None]
    labels: np.ndarray
    probs: np.ndarray


def bootstrap_auc(
    y: np.ndarray, p: np.ndarray, rounds: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """95 % percentile bootstrap interval of the AUC (None when a class is missing)."""
    known = ~np.isnan(y)
    y, p = y[known], p[known]
    if y.size == 0 or y.min() == y.max():
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, y.size, y.size)
        auc = class_auc(y[pick].astype(int), p[pick])
        if not math.isnan(auc):
            values.append(auc)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def cross_validate(
    cfg: TrainConfig, out_dir: Path, folds: int = 5, *, overwrite: bool = False
) -> dict[str, Any]:
    """Train ``folds`` models (one run folder each under ``out_dir``) and pool their tests.

    Returns
    -------
    dict
        ``folds`` (per-fold AUC per class), ``pooled`` (the study-level report over every
        held-out item, with ``auc_ci95`` per class), ``fold_auc_mean`` / ``fold_auc_range``
        per class; also written to ``out_dir/crossval.json`` with pooled plots.

    Raises
    ------
    ConfigError
        On invalid options or an ``out_dir`` that is not new (without ``overwrite``).
    """
    check_config(cfg)
    prepare_run_dir(out_dir, overwrite=overwrite)
    dataset = load_dataset(cfg)
    names = dataset.class_names
    results: list[FoldResult] = []
    for k, split in enumerate(kfold_splits(dataset, folds, cfg.seed)):
        logger.info("fold %d/%d: %s", k + 1, folds, {n: len(v) for n, v in split.items()})
        run = train_run(cfg, out_dir / f"fold-{k + 1}", split=split)
        labels, probs = run.held_out["test"]
        auc = {
            name: _none_if_nan(class_auc(*_known(labels[:, j], probs[:, j])))
            for j, name in enumerate(names)
        }
        logger.info("fold %d test AUC %s", k + 1, auc)
        results.append(FoldResult(k + 1, auc, labels, probs))
    labels = np.concatenate([r.labels for r in results])
    probs = np.concatenate([r.probs for r in results])
    pooled = level_report(labels, probs, names)
    pooled["auc_ci95"] = {
        name: bootstrap_auc(labels[:, j], probs[:, j], seed=cfg.seed)
        for j, name in enumerate(names)
    }
    summary: dict[str, Any] = {
        "title": f"{folds}-fold cross-validation on {dataset.source}",
        "folds": [{"fold": r.fold, "n": int(r.labels.shape[0]), "auc": r.auc} for r in results],
        "fold_auc_mean": {},
        "fold_auc_range": {},
        "study": pooled,
    }
    for name in names:
        values = [v for r in results if (v := r.auc[name]) is not None]
        summary["fold_auc_mean"][name] = float(np.mean(values)) if values else None
        summary["fold_auc_range"][name] = [min(values), max(values)] if values else None
    write_report(out_dir / "pooled", summary, {"study": (labels, probs)}, names)
    (out_dir / "crossval.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    return summary


def _known(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = ~np.isnan(y)
    return y[mask].astype(int), p[mask]


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value
