"""Run one bundle over one ordered series: preprocessing from the bundle's spec, both stages.

No database here: input is decoded datasets, output is probabilities per study and per
slice, so the same code serves the Celery task, the benchmarks and ``make realdata``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydicom.dataset import Dataset

from training.preprocessing import preprocess_datasets

if TYPE_CHECKING:
    from training.bundle import Bundle


@dataclass(frozen=True)
class StudyResult:
    """What a bundle said about a series, with how long each step took."""

    study_probabilities: dict[str, float]
    slice_scores: list[dict[str, Any]]
    preprocess_seconds: float
    inference_seconds: float
    embeddings: np.ndarray | None = None  # (N, D) image-model embeddings, for the domain score
    model_input: torch.Tensor | None = None  # (N, 3, S, S) as the model saw it, if kept


def _instance_number(ds: Dataset) -> int | None:
    value = ds.get("InstanceNumber")
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def infer_series(
    bundle: Bundle,
    datasets: Sequence[Dataset],
    *,
    device: str,
    batch_size: int,
    judge: bool = True,
    keep_input: bool = False,
) -> StudyResult:
    """Order, preprocess and score a series; slice scores come back in patient-axis order.

    With ``judge`` false only the image model's embeddings are computed (for the domain
    score of a study that is not to be assessed): no probabilities, no slice scores.
    With ``keep_input`` the preprocessed tensor comes back too, so key images
    (``worker.reports.key_images.render_key_images``) need no second preprocessing.
    """
    started = time.perf_counter()
    tensor, order = preprocess_datasets(datasets, bundle.preprocess)
    prepared = time.perf_counter()
    if not judge:
        embeddings = bundle.embed(tensor, batch_size=batch_size, device=device)
        return StudyResult({}, [], prepared - started, time.perf_counter() - prepared, embeddings)
    prediction = bundle.predict_volume(tensor, batch_size=batch_size, device=device)
    done = time.perf_counter()
    slice_scores = []
    for rank, index in enumerate(order):
        ds = datasets[index]
        slice_scores.append(
            {
                "index": rank,
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "instance_number": _instance_number(ds),
                "scores": {
                    k: round(float(v), 6) for k, v in prediction.slice_probabilities[rank].items()
                },
            }
        )
    return StudyResult(
        {k: float(v) for k, v in prediction.study_probabilities.items()},
        slice_scores,
        prepared - started,
        done - prepared,
        prediction.embeddings,
        tensor if keep_input else None,
    )
