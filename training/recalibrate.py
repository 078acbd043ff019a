"""Re-fit calibration, operating thresholds and reports of a finished run, without training.

Why: calibration and thresholds are chosen after both stages are trained, from the
validation split's predictions. When their rules change (the temperature bounds did, after a
demo retrain fitted T = 0.05 on a perfectly separated validation split) or another target
sensitivity is wanted, the run's saved weights, split and slice cache give the same
predictions again in a minute instead of a retrain. ``training recalibrate RUN`` then
``training export`` makes the bundle.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file

from training.config import config_from_dict, save_config
from training.image_stage import predict_slices
from training.models import build_image_model, build_sequence_model
from training.patient_stage import predict_sequences
from training.preprocessing import PreprocessSpec
from training.run import calibrate_and_report, load_dataset, series_inputs
from training.slice_cache import build_cache

logger = logging.getLogger(__name__)


def recalibrate_run(run_dir: Path, target_sensitivity: float | None = None) -> dict[str, Any]:
    """Score the run's splits again with its saved models and redo the calibration tail.

    Parameters
    ----------
    target_sensitivity
        A new target for the thresholds; the run's own when None (saved in its config).

    Returns
    -------
    dict
        The new report blocks per split (as ``train_run`` returns them).

    Raises
    ------
    FileNotFoundError
        If the run folder lacks its config, split, model description or weights.
    """
    run_dir = Path(run_dir)
    cfg = config_from_dict(json.loads((run_dir / "config.resolved.json").read_text()))
    if target_sensitivity is not None:
        cfg.target_sensitivity = target_sensitivity
        save_config(cfg, run_dir / "config.resolved.json")
    description = json.loads((run_dir / "model.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    spec = PreprocessSpec.from_dict(description["preprocess"])
    dataset = load_dataset(cfg)
    names = dataset.class_names
    image_cfg, seq_cfg = description["image_model"], description["sequence_model"]
    image = build_image_model(image_cfg["arch"], len(names), **image_cfg["params"])
    image.load_state_dict(load_file(str(run_dir / "image_stage.safetensors")))
    sequence = build_sequence_model(
        seq_cfg["arch"], int(seq_cfg["embed_dim"]), len(names), **seq_cfg["params"]
    )
    sequence.load_state_dict(load_file(str(run_dir / "patient_stage.safetensors")))
    sequence.eval()

    all_slices = dataset.slices
    cache = build_cache(all_slices, spec, run_dir / "cache", failures=[])
    index = {rec.path: i for i, rec in enumerate(all_slices)}
    kept = {uid for uids in split.values() for uid in uids}
    dataset = dataset.subset(kept)
    parts = {name: dataset.subset(uids) for name, uids in split.items()}
    rows = np.array([index[r.path] for r in dataset.slices], dtype=np.int64)
    embeddings = np.zeros((len(all_slices), image.num_features), np.float32)
    logits = np.zeros((len(all_slices), len(names)), np.float32)
    embeddings[rows], logits[rows] = predict_slices(image, cache[rows], spec, 64)
    offsets = {s.series_uid: index[s.slices[0].path] for s in dataset.series}
    inputs = dict(
        zip(
            [s.series_uid for s in dataset.series],
            series_inputs(dataset, embeddings, logits, offsets),
            strict=True,
        )
    )
    predictions = {
        name: predict_sequences(sequence, [inputs[s.series_uid] for s in part.series])
        for name, part in parts.items()
        if part.series
    }
    _, report, _ = calibrate_and_report(cfg, run_dir, parts, predictions)
    logger.info("recalibrated %s", run_dir)
    return report
