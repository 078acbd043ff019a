"""Multi-label losses that ignore unknown labels and weight classes.

Why masked: public datasets label some classes and not others (RSNA has no ``ischemic``), and
a missing label means unknown, not negative, so unknown entries (NaN targets) contribute
nothing. Class weights default to the RSNA weights (``any`` counts double).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def inverse_frequency_weights(labels: np.ndarray, max_weight: float = 50.0) -> np.ndarray:
    """Positive-class weights ``negatives / positives`` per column (NaN ignored), clipped.

    Used as ``pos_weight`` for BCE and as the positive ``alpha`` of focal loss, so rare
    classes are not drowned by the negatives.
    """
    pos = np.nansum(labels, axis=0)
    known = np.sum(~np.isnan(labels), axis=0)
    neg = known - pos
    weights = np.where(pos > 0, neg / np.maximum(pos, 1.0), 1.0)
    return np.clip(weights, 1.0, max_weight).astype(np.float32)


class MaskedMultiLabelLoss(nn.Module):
    """BCE-with-logits or focal loss over known labels, with per-class weights.

    Parameters
    ----------
    kind
        ``"bce"`` or ``"focal"``.
    class_weights
        Weight of each class's term (e.g. RSNA: 2 for ``any``); defaults to ones.
    pos_weight
        Extra weight on positive targets per class (inverse frequency), or None.
    gamma
        Focusing parameter of the focal loss.
    """

    # Buffers (registered in ``__init__``); declared so the type checker sees tensors.
    class_weights: torch.Tensor | None
    pos_weight: torch.Tensor | None

    def __init__(
        self,
        kind: str = "bce",
        class_weights: torch.Tensor | None = None,
        pos_weight: torch.Tensor | None = None,
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if kind not in ("bce", "focal"):
            raise ValueError(f"kind: 'bce' or 'focal' (got {kind!r})")
        self.kind = kind
        self.gamma = gamma
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        y = torch.where(known, targets, torch.zeros_like(targets))
        logits = logits.float()
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if self.kind == "focal":
            p = torch.sigmoid(logits)
            p_t = p * y + (1 - p) * (1 - y)
            per = per * (1 - p_t).pow(self.gamma)
        if self.pos_weight is not None:
            per = per * torch.where(y > 0.5, self.pos_weight.expand_as(y), torch.ones_like(y))
        weights = known.float()
        if self.class_weights is not None:
            weights = weights * self.class_weights
        return (per * weights).sum() / weights.sum().clamp(min=1e-6)
