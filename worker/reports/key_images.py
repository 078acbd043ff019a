"""Render key images: the Grad-CAM heat-map over the exact pixels the model saw.

Why the model's own input: a heat-map drawn over a re-windowed or re-sized original would
misplace the evidence by the crop and resize the model applied. The background here is
the model input's brain-window channel turned back into grey levels, and the heat-map is
``training.explain.grad_cam`` of the class the slice is shown for. Pixels are upscaled by
whole factors (nearest neighbour), so every model pixel stays one visible block.

Imports torch: call it in the worker while the bundle is loaded, never in the listener.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from training.explain import grad_cam
from training.preprocessing import head_box, preprocess_datasets, volume_to_tensor
from worker.reports.inputs import KeyImage
from worker.reports.key_slices import KeySlice, key_images_slices

if TYPE_CHECKING:
    from training.bundle import Bundle
    from training.models import ImageModel

DEFAULT_KEY_IMAGE_COUNT = 3
MIN_DISPLAY_SIDE = 256  # model inputs are often 128 px: shown at least this large
# One Grad-CAM at a time per process: it flips the shared model's requires_grad flags and
# torch's thread count, which two threads of a "threads" worker pool must not interleave.
_GRAD_CAM_LOCK = threading.Lock()
HEAT_OPACITY = 0.5  # at the hottest pixel; cooler pixels let more of the slice through


def _brain_channel(bundle: Bundle) -> int:
    names = [w.name for w in bundle.preprocess.windows]
    return names.index("brain") if "brain" in names else 0


def brain_window_grey(bundle: Bundle, x: torch.Tensor) -> np.ndarray:
    """The brain-window channel of a model input ``(3, S, S)`` as grey levels in [0, 1].

    Undoes the per-channel normalisation (``training.preprocessing.apply_windows``), so it
    is exactly the windowed slice the model received.
    """
    channel = _brain_channel(bundle)
    spec = bundle.preprocess
    grey = x[channel].detach().float().cpu().numpy() * spec.std[channel] + spec.mean[channel]
    return np.clip(grey, 0.0, 1.0)


def heat_colours(cam: np.ndarray) -> np.ndarray:
    """A blue-cyan-yellow-red ("jet") colour for each value in [0, 1]; ``(..., 3)`` floats."""
    v = np.clip(cam, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # red, green, blue peak positions
    return np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)


def blend(grey: np.ndarray, cam: np.ndarray, opacity: float = HEAT_OPACITY) -> np.ndarray:
    """RGB uint8 of ``cam`` over ``grey`` (both ``(S, S)`` in [0, 1])."""
    alpha = (opacity * np.clip(cam, 0.0, 1.0))[..., None]
    rgb = (1.0 - alpha) * grey[..., None] + alpha * heat_colours(cam)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def upscale(rgb: np.ndarray, min_side: int = MIN_DISPLAY_SIDE) -> tuple[np.ndarray, int]:
    """Nearest-neighbour upscaling by the smallest whole factor reaching ``min_side``."""
    factor = max(1, math.ceil(min_side / max(rgb.shape[0], rgb.shape[1])))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1), factor


def caption(key: KeySlice, demo_label: str | None) -> list[str]:
    """The text burned into a key image (ASCII: the built-in font has no em dash)."""
    lines = [f"{key.class_name} p={key.score:.2f}", "triage aid - not a diagnosis"]
    if demo_label:
        lines.append(demo_label.replace("—", "-"))
    return lines


def draw_caption(rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``rgb`` with ``lines`` written in its top-left corner on a dark band."""
    image = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(image)
    size = max(10, rgb.shape[0] // 24)
    font = ImageFont.load_default(size=size)
    height = (size + 3) * len(lines) + 4
    draw.rectangle((0, 0, rgb.shape[1], height), fill=(0, 0, 0))
    for row, line in enumerate(lines):
        draw.text((4, 2 + row * (size + 3)), line, font=font, fill=(255, 255, 0))
    return np.asarray(image, dtype=np.uint8).copy()


def model_input(bundle: Bundle, volume: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(N, 3, S, S)`` model input: passed through, or made from ``(N, H, W)`` HU."""
    if isinstance(volume, torch.Tensor) and volume.ndim == 4:
        return volume
    return volume_to_tensor(volume, bundle.preprocess)


def display_spacing(
    bundle: Bundle,
    volume: np.ndarray | torch.Tensor,
    source_pixel_spacing: tuple[float, float] | None,
    factor: int,
) -> tuple[float, float] | None:
    """Pixel spacing (mm) of a key image, when the HU volume and its spacing are known."""
    if source_pixel_spacing is None or (isinstance(volume, torch.Tensor) and volume.ndim == 4):
        return None
    rows, cols = volume.shape[-2:]
    if bundle.preprocess.crop_to_head:
        top, bottom, left, right = head_box(volume)
        rows, cols = bottom - top, right - left
    size = bundle.preprocess.size
    return (
        round(source_pixel_spacing[0] * rows / size / factor, 6),
        round(source_pixel_spacing[1] * cols / size / factor, 6),
    )


def render_key_images(
    bundle: Bundle,
    volume: np.ndarray | torch.Tensor,
    scores: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    k: int = DEFAULT_KEY_IMAGE_COUNT,
    *,
    flags: Mapping[str, bool] | None = None,
    probabilities: Mapping[str, float] | None = None,
    demo_label: str | None = None,
    source_pixel_spacing: tuple[float, float] | None = None,
    annotate: bool = True,
) -> list[KeyImage]:
    """Grad-CAM key images of the ``k`` highest-scoring slices of one series.

    Parameters
    ----------
    volume
        The series as the model saw it, ``(N, 3, S, S)`` (what ``infer_series`` made), or
        as HU ``(N, H, W)`` in the same slice order (then preprocessed here).
    scores
        Slice scores in that order (``StudyResult.slice_scores``): ``sop_instance_uid``,
        ``index`` and ``scores`` per class.
    flags, probabilities
        The study's flags and probabilities: slices are chosen for the flagged classes,
        or for the most probable class when none is flagged
        (:func:`~worker.reports.key_slices.key_images_slices`).
    demo_label
        Burned into the picture too when given (a synthetic bundle).
    source_pixel_spacing
        Row and column spacing of the source slices (mm); with an HU volume it gives the
        key images their true pixel spacing.
    annotate
        Write the class, probability and triage-aid text into the pixels.

    Raises
    ------
    ValueError
        If ``scores`` and ``volume`` disagree in length, or a class is not the bundle's.
    """
    x = model_input(bundle, volume)
    if len(scores) != x.shape[0]:
        raise ValueError(f"scores: {len(scores)} entries for {x.shape[0]} slices")
    chosen = key_images_slices(scores, class_names, flags or {}, probabilities or {}, k)
    unknown = [key.class_name for key in chosen if key.class_name not in bundle.class_names]
    if unknown:
        raise ValueError(f"class_names: {unknown} are not the bundle's classes")
    positions = {str(s["sop_instance_uid"]): i for i, s in enumerate(scores)}
    model = _explainable(bundle.image_model)
    images = []
    with _GRAD_CAM_LOCK, _gradients_to_input_only(model), _one_thread():
        for key in chosen:
            one = x[positions[key.sop_instance_uid]][None].detach().cpu().requires_grad_(True)
            cam, _ = grad_cam(model, one, bundle.class_names.index(key.class_name))
            one = one.detach()
            rgb, factor = upscale(blend(brain_window_grey(bundle, one[0]), cam))
            if annotate:
                rgb = draw_caption(rgb, caption(key, demo_label))
            images.append(
                KeyImage(
                    pixels=rgb,
                    source_sop_instance_uid=key.sop_instance_uid,
                    class_name=key.class_name,
                    score=key.score,
                    annotated=annotate,
                    pixel_spacing_mm=display_spacing(bundle, volume, source_pixel_spacing, factor),
                )
            )
    return images


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread meanwhile, then restore the count.

    One 128-256 px slice gains nothing from intra-op threads, and on a machine whose
    cores are busy they cost a lot: measured on the 2-core test machine at load 11,
    one Grad-CAM took 0.1-2 s with 2 threads and 20-50 ms with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _gradients_to_input_only(model: ImageModel) -> Iterator[None]:
    """Grad-CAM needs gradients at the feature map, never at the weights.

    With the weights frozen (and the input asking for gradients) backward skips every
    weight gradient, about half its work, and leaves no ``.grad`` on the worker's model;
    the flags are restored afterwards.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, wanted in flags:
            parameter.requires_grad_(wanted)
            parameter.grad = None


def _explainable(model: ImageModel) -> ImageModel:
    """The image model on the CPU: the model itself there, else a CPU copy.

    ``grad_cam`` hands back ``cam.numpy()``, which only a CPU tensor allows; a copy (not a
    move) leaves the worker's model where inference expects it.
    """
    if next(model.parameters()).device.type == "cpu":
        return model
    return copy.deepcopy(model).cpu()


def key_images_for_series(
    bundle: Bundle,
    datasets: Sequence[Dataset],
    scores: Sequence[Mapping[str, Any]],
    *,
    flags: Mapping[str, bool],
    probabilities: Mapping[str, float],
    k: int = DEFAULT_KEY_IMAGE_COUNT,
    annotate: bool = True,
) -> list[KeyImage]:
    """Key images from the decoded slices the worker holds after ``infer_series``.

    Preprocesses ``datasets`` with the very function inference used
    (``training.preprocessing.preprocess_datasets``: same order as ``scores``, same
    pixels), and labels the pictures with the demo label of a synthetic bundle. The key
    images carry no pixel spacing here (the head crop is the preprocessing's business).
    """
    x, _ = preprocess_datasets(datasets, bundle.preprocess)
    return render_key_images(
        bundle,
        x,
        scores,
        bundle.class_names,
        k,
        flags=flags,
        probabilities=probabilities,
        demo_label=bundle.disclaimer if bundle.synthetic_demo else None,
        annotate=annotate,
    )
