"""Balanced per-class sampling for the image stage.

Why: hemorrhage subtypes are rare among slices (epidural under 1% in RSNA). Drawing each slice
with probability inversely proportional to the frequency of its rarest positive class shows the
model every class about equally often, while negatives keep their own share.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def balanced_weights(labels: np.ndarray, negative_share: float = 0.5) -> np.ndarray:
    """Per-sample weights so each positive class and the all-negative group are balanced.

    Parameters
    ----------
    labels
        ``(N, C)`` with NaN for unknown.
    negative_share
        Fraction of draws that go to samples with no positive label.
    """
    y = np.nan_to_num(labels, nan=0.0) > 0.5
    n, c = y.shape
    pos_counts = y.sum(axis=0)
    weights = np.zeros(n, dtype=np.float64)
    positive = y.any(axis=1)
    active = max(1, int((pos_counts > 0).sum()))
    for j in range(c):
        if pos_counts[j] == 0:
            continue
        weights[y[:, j]] += (1.0 - negative_share) / active / pos_counts[j]
    negatives = (~positive).sum()
    if negatives:
        weights[~positive] = negative_share / negatives
    if not weights.any():
        weights[:] = 1.0
    return weights / weights.sum()


def make_sampler(
    labels: np.ndarray, mode: str, seed: int, num_samples: int | None = None
) -> WeightedRandomSampler | None:
    """Sampler for ``mode`` ``"balanced"``; None for ``"none"`` (plain shuffling)."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"sampling: 'balanced' or 'none' (got {mode!r})")
    # A list of floats, as the sampler's signature asks; it makes its own double tensor.
    weights: list[float] = balanced_weights(labels).tolist()
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        weights, num_samples or len(weights), replacement=True, generator=generator
    )
