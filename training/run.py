"""One training run end to end: data, split, both stages, thresholds, reports, run folder.

Why a run folder: export, evaluation and audits need to know exactly what was trained on what.
The folder holds the resolved config, the split, both checkpoints, the model description, the
thresholds, the histories and the validation/test reports; ``training export`` turns it into a
bundle without retraining.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.aggregate import studies_from_series
from training.calibration import apply_temperatures, fit_temperatures
from training.config import TrainConfig, save_config
from training.datasets import LabelledDataset, read_folder_dataset, read_rsna_dataset
from training.datasets.records import label_matrix, pooled_labels
from training.image_stage import (
    CHECKPOINT_FILE,
    ImageStageTrainer,
    predict_slices,
    resolve_device,
    seed_everything,
)
from training.metrics import level_report
from training.models import build_sequence_model
from training.patient_stage import PatientStageTrainer, SeriesInput, predict_sequences
from training.preflight import check_config, prepare_run_dir
from training.preprocessing import PreprocessSpec, Window
from training.reports import json_safe, write_report
from training.run_log import MetricsLog, log_to_file, write_environment
from training.slice_cache import BadFile, BadFileError, build_cache
from training.split import split_by_patient
from training.thresholds import thresholds_for_sensitivity

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class RunResult:
    """Where the run was written and its headline numbers."""

    run_dir: Path
    thresholds: dict[str, float]
    report: dict[str, Any]
    seconds: float
    held_out: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Study-level ``(labels, calibrated probabilities)`` per evaluated split."""


def load_dataset(cfg: TrainConfig) -> LabelledDataset:
    """Read the dataset named by the config (RSNA layout or class folders).

    Raises
    ------
    ValueError
        If the config names neither or both layouts.
    """
    data = cfg.data
    if data.folders and not data.dicom_dir:
        return read_folder_dataset(Path(data.folders), patient_regex=data.patient_regex)
    if data.dicom_dir and not data.folders:
        labels = Path(data.labels) if data.labels else None
        return read_rsna_dataset(Path(data.dicom_dir), labels, labelled_only=True)
    raise ValueError("data: give either dicom_dir (+ labels) or folders")


def make_spec(cfg: TrainConfig, kind: str) -> PreprocessSpec:
    """Preprocessing for this run; ImageNet statistics when starting from ImageNet weights."""
    pretrained = cfg.image.pretrained is not None
    return PreprocessSpec(
        windows=tuple(Window(**w) for w in cfg.windows),
        size=cfg.size,
        mean=IMAGENET_MEAN if pretrained else (0.5, 0.5, 0.5),
        std=IMAGENET_STD if pretrained else (0.25, 0.25, 0.25),
        input_kind=kind,
        crop_to_head=cfg.crop_to_head and kind == "ct",
    )


def series_inputs(
    dataset: LabelledDataset, embeddings: np.ndarray, logits: np.ndarray, offsets: dict[str, int]
) -> list[SeriesInput]:
    """Cut the flat per-slice arrays into one :class:`SeriesInput` per series."""
    items = []
    for series in dataset.series:
        start = offsets[series.series_uid]
        stop = start + len(series.slices)
        labels = label_matrix(series.slices, dataset.class_names)
        items.append(
            SeriesInput(embeddings[start:stop], logits[start:stop], labels, pooled_labels(labels))
        )
    return items


def evaluate_split(
    dataset: LabelledDataset,
    study_probs: np.ndarray,
    slice_probs: list[np.ndarray],
    thresholds: dict[str, float],
    slice_thresholds: dict[str, float],
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Study- and slice-level report blocks for the series of ``dataset``."""
    names = dataset.class_names
    uids, probs, labels = studies_from_series(
        [s.study_uid for s in dataset.series], study_probs, dataset.series_labels()
    )
    slice_y = label_matrix(dataset.slices, names)
    slice_p = np.concatenate(slice_probs) if slice_probs else np.zeros((0, len(names)))
    report = {
        "study": level_report(labels, probs, names, thresholds),
        "slice": level_report(slice_y, slice_p, names, slice_thresholds),
    }
    report["study"]["study_uids"] = len(uids)
    return report, {"study": (labels, probs), "slice": (slice_y, slice_p)}


def train_run(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    split: dict[str, list[str]] | None = None,
) -> RunResult:
    """Train both stages on the configured data and write the run folder.

    Every option is checked before anything is decoded, and the run folder must be new (or
    emptied with ``overwrite``, or continued with ``resume`` from its last image-stage epoch).
    ``split`` (series UIDs per ``train``/``val``/``test``) replaces the patient-wise split made
    from the config's fractions (cross-validation folds).

    Raises
    ------
    ConfigError
        On invalid options or a run folder that is not new.
    PretrainedMismatchError
        If the pretrained file fits too few of the backbone's tensors.
    BadFileError
        If more than ``data.max_bad_fraction`` of the slices cannot be decoded.
    """
    check_config(cfg)
    prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
    with log_to_file(run_dir):
        return _train(cfg, run_dir, resume, split)


def _decoded(
    dataset: LabelledDataset, cfg: TrainConfig, spec: PreprocessSpec, run_dir: Path
) -> tuple[LabelledDataset, np.ndarray]:
    """Decode every slice once; drop series with undecodable files, refusing too many."""
    bad: list[BadFile] = []
    cache = build_cache(dataset.slices, spec, run_dir / "cache", failures=bad)
    total = len(dataset.slices)
    problems = {
        "bad_files": [{"file": str(b.path), "reason": b.reason} for b in bad],
        "missing_files": list(dataset.missing_files),
    }
    (run_dir / "data_problems.json").write_text(json.dumps(problems, indent=2) + "\n")
    if dataset.missing_files:
        logger.warning(
            "%d labelled images have no file (listed in data_problems.json)",
            len(dataset.missing_files),
        )
    if not bad:
        return dataset, cache
    if len(bad) > cfg.data.max_bad_fraction * total:
        raise BadFileError(bad, total)
    broken = {b.path for b in bad}
    keep = [s.series_uid for s in dataset.series if not broken & {r.path for r in s.slices}]
    logger.warning(
        "skipped %d undecodable files of %d (%d series dropped); listed in data_problems.json",
        len(bad),
        total,
        len(dataset.series) - len(keep),
    )
    return dataset.subset(keep), cache


def _train(
    cfg: TrainConfig, run_dir: Path, resume: bool, given: dict[str, list[str]] | None
) -> RunResult:
    started = time.monotonic()
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    save_config(cfg, run_dir / "config.resolved.json")
    env = write_environment(run_dir)
    logger.info(
        "training on %s (%d CPU threads); run folder %s; torch %s timm %s commit %s",
        device,
        cfg.threads,
        run_dir,
        env["torch"],
        env["timm"],
        env["git"]["commit"],
    )

    dataset = load_dataset(cfg)
    names = dataset.class_names
    spec = make_spec(cfg, dataset.kind)
    trainer = ImageStageTrainer(cfg.image, spec, names, device, cfg.seed, run_dir)
    model = trainer.build_model()  # before decoding: a wrong pretrained file fails here
    all_slices = dataset.slices
    index = {rec.path: i for i, rec in enumerate(all_slices)}
    dataset, cache = _decoded(dataset, cfg, spec, run_dir)
    if given is None:
        split = split_by_patient(dataset, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    else:
        kept = {s.series_uid for s in dataset.series}
        split = {name: [uid for uid in uids if uid in kept] for name, uids in given.items()}
    (run_dir / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    parts = {name: dataset.subset(uids) for name, uids in split.items()}
    offsets = {series.series_uid: index[series.slices[0].path] for series in dataset.series}

    def rows(part: LabelledDataset) -> tuple[np.ndarray, np.ndarray]:
        idx = np.array([index[r.path] for r in part.slices], dtype=np.int64)
        return idx, label_matrix(part.slices, names)

    train_idx, train_y = rows(parts["train"])
    val_idx, val_y = rows(parts["val"])
    metrics_log = MetricsLog(run_dir / "metrics_image.csv", _done_epochs(run_dir, resume))
    image = trainer.fit(
        cache[train_idx],
        train_y,
        cache[val_idx],
        val_y,
        model=model,
        resume=resume,
        on_epoch=metrics_log.add,
    )

    kept_idx = np.array([index[r.path] for r in dataset.slices], dtype=np.int64)
    embeddings = np.zeros((len(all_slices), image.model.num_features), np.float32)
    logits = np.zeros((len(all_slices), len(names)), np.float32)
    embeddings[kept_idx], logits[kept_idx] = predict_slices(
        image.model, cache[kept_idx], spec, 64, device
    )
    inputs = dict(
        zip(
            [s.series_uid for s in dataset.series],
            series_inputs(dataset, embeddings, logits, offsets),
            strict=True,
        )
    )
    by_split = {name: [inputs[s.series_uid] for s in part.series] for name, part in parts.items()}
    seq_arch = "max_pool" if cfg.skip_patient_stage else cfg.patient.arch
    if seq_arch == "max_pool":
        sequence = build_sequence_model("max_pool", image.model.num_features, len(names))
        seq_params: dict[str, Any] = {}
        patient_history: list[dict[str, float]] = []
    else:
        patient_log = MetricsLog(run_dir / "metrics_patient.csv")
        patient = PatientStageTrainer(cfg.patient, names, device, cfg.seed, run_dir).fit(
            by_split["train"], by_split["val"], image.model.num_features, on_epoch=patient_log.add
        )
        sequence, seq_params, patient_history = (
            patient.model,
            cfg.patient.model_params(),
            patient.history,
        )
    sequence.cpu()
    image.model.cpu()

    predictions = {
        name: predict_sequences(sequence, items) for name, items in by_split.items() if items
    }
    thresholds, report, held_out = calibrate_and_report(cfg, run_dir, parts, predictions)

    model_description = {
        "class_names": list(names),
        "preprocess": spec.to_dict(),
        "image_model": {"arch": cfg.image.arch, "params": trainer.model_params()},
        "sequence_model": {
            "arch": seq_arch,
            "embed_dim": image.model.num_features,
            "params": seq_params,
        },
    }
    (run_dir / "model.json").write_text(json.dumps(model_description, indent=2) + "\n")
    summary = dataset.summary()
    summary["splits"] = {name: part.summary() for name, part in parts.items()}
    (run_dir / "training_data.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    (run_dir / "history.json").write_text(
        json.dumps(
            json_safe(
                {
                    "image": image.history,
                    "image_best_epoch": image.best_epoch,
                    "patient": patient_history,
                }
            ),
            indent=2,
        )
        + "\n"
    )
    if seq_arch == "max_pool":
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in sequence.state_dict().items()},
            str(run_dir / "patient_stage.safetensors"),
        )
    seconds = time.monotonic() - started
    logger.info("run finished in %.0f s", seconds)
    return RunResult(run_dir, thresholds, report, seconds, held_out)


def calibrate_and_report(
    cfg: TrainConfig,
    run_dir: Path,
    parts: dict[str, LabelledDataset],
    predictions: dict[str, tuple[np.ndarray, list[np.ndarray]]],
) -> tuple[dict[str, float], dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Fit temperatures and thresholds on validation, report val and test; write the files.

    ``predictions`` are the uncalibrated ``(study probabilities, slice probabilities)`` per
    split. Writes ``calibration.json``, ``thresholds.json`` and ``report_<split>/``; returns
    the study thresholds, the report blocks and the study-level held-out curves.
    """
    names = next(iter(parts.values())).class_names
    val_name = "val" if "val" in predictions else "train"
    val_part = parts[val_name]
    _, val_probs, val_labels = studies_from_series(
        [s.study_uid for s in val_part.series],
        predictions[val_name][0],
        val_part.series_labels(),
    )
    val_slice_y = label_matrix(val_part.slices, names)
    val_slice_p = np.concatenate(predictions[val_name][1])
    calibration: dict[str, dict[str, float]] = {"study": {}, "slice": {}}
    if cfg.calibrate:
        calibration = {
            "study": fit_temperatures(val_labels, val_probs, names),
            "slice": fit_temperatures(val_slice_y, val_slice_p, names),
        }
        logger.info("temperatures per class (study level): %s", calibration["study"])
        predictions = {
            name: (
                apply_temperatures(study_p, names, calibration["study"]),
                [apply_temperatures(p, names, calibration["slice"]) for p in slice_p],
            )
            for name, (study_p, slice_p) in predictions.items()
        }
        val_probs = apply_temperatures(val_probs, names, calibration["study"])
        val_slice_p = apply_temperatures(val_slice_p, names, calibration["slice"])
    thresholds = thresholds_for_sensitivity(val_labels, val_probs, names, cfg.target_sensitivity)
    slice_thresholds = thresholds_for_sensitivity(
        val_slice_y, val_slice_p, names, cfg.target_sensitivity
    )
    report: dict[str, Any] = {}
    held_out: dict[str, Any] = {}
    for name in ("val", "test"):
        if name not in predictions:
            continue
        block, curves = evaluate_split(
            parts[name], *predictions[name], thresholds, slice_thresholds
        )
        block["title"] = f"{name} split ({len(parts[name].series)} series)"
        write_report(run_dir / f"report_{name}", block, curves, names)
        report[name] = block
        held_out[name] = curves["study"]
    (run_dir / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    (run_dir / "thresholds.json").write_text(
        json.dumps(
            {
                "target_sensitivity": cfg.target_sensitivity,
                "study": thresholds,
                "slice": slice_thresholds,
            },
            indent=2,
        )
        + "\n"
    )
    return thresholds, report, held_out


def _done_epochs(run_dir: Path, resume: bool) -> int:
    """Image-stage epochs a resumed run already has (its checkpoint's epoch), else 0."""
    checkpoint = run_dir / CHECKPOINT_FILE
    if not resume or not checkpoint.exists():
        return 0
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"])
