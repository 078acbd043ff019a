"""``training explain``: Grad-CAM heat-maps over a slice, saved as PNG.

Why Grad-CAM: it needs no change to the model, works for any CNN backbone (and ViTs through
their patch tokens), and shows a reader where the evidence for a class sits, which is what key
images are for.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F

from training.bundle import Bundle
from training.models import ImageModel
from training.preprocessing import (
    hu_from_dataset,
    image_file_to_tensor,
    resize_stack,
    volume_to_tensor,
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
    return cam.numpy(), float(torch.sigmoid(logits[0, class_index].detach()))


def explain_file(
    bundle: Bundle, path: Path, out_png: Path, class_name: str | None = None
) -> tuple[str, float]:
    """Write a PNG with the slice (brain window) and its Grad-CAM overlay.

    Parameters
    ----------
    class_name
        Class to explain; default the most probable class.

    Returns
    -------
    tuple[str, float]
        The class explained and its probability.

    Raises
    ------
    ValueError
        If ``class_name`` is not one of the bundle's classes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = bundle.preprocess
    if path.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}:
        x = image_file_to_tensor(path, spec)
        background = x[0, 0].numpy()
    else:
        hu = resize_stack(hu_from_dataset(pydicom.dcmread(path))[None], spec.size)
        x = volume_to_tensor(hu, spec)
        brain = spec.windows[0]
        background = np.clip((hu[0].numpy() - brain.centre + brain.width / 2) / brain.width, 0, 1)
    if class_name is None:
        with torch.inference_mode():
            _, logits = bundle.image_model(x)
        index = int(torch.argmax(logits[0]))
    elif class_name in bundle.class_names:
        index = bundle.class_names.index(class_name)
    else:
        raise ValueError(f"--class: {class_name!r} is not one of {bundle.class_names}")
    cam, prob = grad_cam(bundle.image_model, x, index)
    name = bundle.class_names[index]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
    for ax in axes:
        ax.imshow(background, cmap="gray")
        ax.axis("off")
    axes[1].imshow(cam, cmap="jet", alpha=0.4)
    axes[0].set_title(path.name[:40], fontsize=8)
    axes[1].set_title(f"Grad-CAM: {name} p={prob:.2f}", fontsize=9)
    fig.suptitle(f"{bundle.name} {bundle.version} — {bundle.disclaimer}", fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    logger.info("wrote Grad-CAM for %s (p=%.3f) to %s", name, prob, out_png)
    return name, prob
