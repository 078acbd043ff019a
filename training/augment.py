"""Batch augmentation on pre-window data: flips, small rotations, intensity jitter.

Why on the batch and before windowing: one vectorised call per batch is cheap on two CPU
cores, and jittering HU (not window output) mimics scanner calibration differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Augmentation strengths; zeros disable a transform."""

    hflip: float = 0.5
    vflip: float = 0.0
    rotate_deg: float = 10.0
    scale: float = 0.05
    shift: float = 0.04
    intensity_scale: float = 0.03
    intensity_shift: float = 4.0


def augment_batch(
    x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator, hu: bool = True
) -> torch.Tensor:
    """Randomly transform ``(B, C, H, W)``; background is filled with air (HU) or black.

    ``intensity_shift`` is in HU when ``hu`` is set, else scaled to the [0, 1] range.
    """
    b = x.shape[0]
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    angle = (rand(b) * 2 - 1) * math.radians(cfg.rotate_deg)
    scale = 1 + (rand(b) * 2 - 1) * cfg.scale
    flip_x = torch.where(rand(b) < cfg.hflip, -1.0, 1.0).to(dev)
    flip_y = torch.where(rand(b) < cfg.vflip, -1.0, 1.0).to(dev)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip_x, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos * flip_y
    theta[:, :, 2] = (rand(b, 2) * 2 - 1) * cfg.shift * 2
    background = -1024.0 if hu else 0.0
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = (
        F.grid_sample(
            x.float() - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        + background
    )
    gain = 1 + (rand(b, 1, 1, 1) * 2 - 1) * cfg.intensity_scale
    shift = (rand(b, 1, 1, 1) * 2 - 1) * (cfg.intensity_shift if hu else cfg.intensity_shift / 255)
    if hu:  # scale soft tissue around water so air and bone stay put
        return torch.where(out > -200, out * gain + shift, out)
    return (out * gain + shift).clamp(0.0, 1.0)
