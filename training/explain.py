"""``training explain``: Grad-CAM heat-maps over a slice, saved as PNG.

Why Grad-CAM: it needs no change to the model, works for any CNN backbone (and ViTs through
their patch tokens), and shows a reader where the evidence for a class sits, which is what key
images are for.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.errors import InvalidDicomError

from training.bundle import Bundle
from training.models import ImageModel
from training.preprocessing import (
    PICTURE_SUFFIXES,
    PreprocessSpec,
    image_file_to_tensor,
    preprocess_datasets,
)

logger = logging.getLogger(__name__)


def grad_cam(model: ImageModel, x: torch.Tensor, class_index: int) -> tuple[np.ndarray, float]:
    """Grad-CAM of one class for one input ``(1, 3, S, S)``.

    Returns
    -------
    tuple[np.ndarray, float]
        Heat-map ``(S, S)`` scaled to [0, 1], and the class probability.

    Raises
    ------
    ValueError
        If the backbone's features are neither a feature map nor a square token grid.
    """
    model.eval()
    with torch.enable_grad():
        features = model.features(x)
        features.retain_grad()
        logits = model.head(model.pool(features))
        logits[0, class_index].backward()
        grads, acts = features.grad, features.detach()
    if grads is None:
        raise RuntimeError("explain: no gradient reached the backbone's feature map")
    if acts.ndim == 3:  # ViT tokens (1, N, D): drop prefix tokens, fold into a grid
        prefix = int(getattr(model.backbone, "num_prefix_tokens", 1))
        side = math.isqrt(acts.shape[1] - prefix)
        if side * side != acts.shape[1] - prefix:
            raise ValueError("explain: cannot fold this model's tokens into a square grid")
        acts = acts[:, prefix:].transpose(1, 2).reshape(1, -1, side, side)
        grads = grads[:, prefix:].transpose(1, 2).reshape(1, -1, side, side)
    elif acts.ndim != 4:
        raise ValueError(f"explain: unsupported feature shape {tuple(acts.shape)}")
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam / cam.max() if float(cam.max()) > 0 else cam
    return cam.detach().cpu().numpy(), float(torch.sigmoid(logits[0, class_index].detach()))


@dataclass(frozen=True)
class Explanation:
    """What ``training explain`` shows for one slice, all on the model's own pixel grid.

    Attributes
    ----------
    class_name, probability
        The class explained and the probability the worker gives that slice for it (the
        refined, calibrated slice score of the whole series, not the image model alone).
    cam
        Grad-CAM heat-map ``(S, S)`` in [0, 1] over the model input.
    seen
        The first input channel (the brain window for CT) mapped back to [0, 1]: exactly the
        pixels the model saw, cropped and resized as the worker does, so ``cam`` lies on it.
    slice_index
        Position of the slice in the ordered series.
    """

    class_name: str
    probability: float
    cam: np.ndarray
    seen: np.ndarray
    slice_index: int


def _series_of(path: Path) -> list[pydicom.Dataset]:
    """The DICOM file and the slices of its series lying beside it (the worker's volume)."""
    target = pydicom.dcmread(path)
    series_uid = target.get("SeriesInstanceUID")
    out: list[pydicom.Dataset] = [target]
    for other in sorted(path.parent.iterdir()):
        if other == path or not other.is_file() or other.suffix.lower() in PICTURE_SUFFIXES:
            continue
        try:
            ds = pydicom.dcmread(other)
        except (InvalidDicomError, OSError):
            continue
        if series_uid is not None and ds.get("SeriesInstanceUID") == series_uid:
            out.append(ds)
    return out


def seen_pixels(x: torch.Tensor, spec: PreprocessSpec) -> np.ndarray:
    """First channel of a model input ``(3, S, S)`` un-normalised to [0, 1] (what it saw)."""
    return np.clip(x[0].numpy() * spec.std[0] + spec.mean[0], 0.0, 1.0)


def explain_slice(bundle: Bundle, path: Path, class_name: str | None = None) -> Explanation:
    """Grad-CAM and served probability of one slice, through the worker's own code path.

    A DICOM slice is scored inside its series (the other files of the folder with its
    SeriesInstanceUID) by ``preprocess_datasets`` and ``Bundle.predict_volume``, the calls
    ``worker.study_inference.infer_series`` makes, so the probability is the worker's and the
    heat-map is computed on the same cropped, resized input. A picture goes through
    ``image_file_to_tensor`` as in ``training predict``.

    Raises
    ------
    ValueError
        If ``class_name`` is not one of the bundle's classes.
    """
    spec = bundle.preprocess
    if path.suffix.lower() in PICTURE_SUFFIXES:
        x, rank = image_file_to_tensor(path, spec), 0
    else:
        datasets = _series_of(path)
        x, order = preprocess_datasets(datasets, spec)
        rank = order.index(0)
    served = bundle.predict_volume(x).slice_probabilities[rank]
    if class_name is None:
        class_name = max(served, key=lambda name: served[name])
    elif class_name not in bundle.class_names:
        raise ValueError(f"--class: {class_name!r} is not one of {bundle.class_names}")
    model_input = x[rank : rank + 1]
    cam, _ = grad_cam(bundle.image_model, model_input, bundle.class_names.index(class_name))
    return Explanation(
        class_name, float(served[class_name]), cam, seen_pixels(model_input[0], spec), rank
    )


def explain_file(
    bundle: Bundle, path: Path, out_png: Path, class_name: str | None = None
) -> Explanation:
    """Write a PNG: the pixels the model saw, and the same pixels with the Grad-CAM overlay.

    Parameters
    ----------
    class_name
        Class to explain; default the class the worker scores highest on this slice.

    Raises
    ------
    ValueError
        If ``class_name`` is not one of the bundle's classes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = explain_slice(bundle, path, class_name)
    side = found.seen.shape[0]
    extent = (0.0, float(side), float(side), 0.0)  # both layers on one pixel grid
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.6))
    for ax in axes:
        ax.imshow(found.seen, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
        ax.axis("off")
    axes[1].imshow(found.cam, cmap="jet", alpha=0.4, vmin=0, vmax=1, extent=extent)
    axes[0].set_title(f"model input ({side} px): {path.name[:32]}", fontsize=8)
    axes[1].set_title(f"Grad-CAM: {found.class_name} p={found.probability:.3f}", fontsize=9)
    fig.suptitle(
        f"triage aid: {bundle.name} {bundle.version} (sha256 {bundle.sha256[:12]}) — "
        f"{bundle.disclaimer}",
        fontsize=8,
    )
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    logger.info(
        "wrote Grad-CAM for %s (p=%.3f) to %s", found.class_name, found.probability, out_png
    )
    return found
