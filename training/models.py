"""The two model stages, built by name through a registry.

Why a registry: a bundle stores only names and hyperparameters, and the worker must rebuild the
exact modules from them without knowing how they were trained. Image backbones are any timm
model by name (``test_resnet``/``test_convnext`` are the tiny CPU variants used by tests and the
demo); sequence models are registered here (``gru``, ``transformer`` and the parameter-free
``max_pool`` for image-only datasets).

Interfaces
----------
``ImageModel(x) -> (embeddings, logits)``
    ``x`` is ``(N, 3, H, W)`` preprocessed slices; embeddings ``(N, D)``, logits ``(N, C)``.
``SequenceModel(embeddings, slice_logits, mask=None) -> (study_logits, refined_slice_logits)``
    Over ordered slices of ``B`` studies: embeddings ``(B, L, D)``, slice logits ``(B, L, C)``,
    ``mask`` ``(B, L)`` True for real slices; returns ``(B, C)`` and ``(B, L, C)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import timm
import torch
from torch import nn

logger = logging.getLogger(__name__)


class TimmBackbone(Protocol):
    """The part of a timm model's interface that ``ImageModel`` calls.

    Why: timm models share these methods by convention, not through a base class, so the type
    checker only knows them as ``nn.Module``.
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]: ...


class ImageModel(nn.Module):
    """A timm backbone with a dropout + linear head giving per-slice multi-label logits.

    Parameters
    ----------
    arch
        timm model name, e.g. ``resnet18``, ``inception_v3``, ``vit_large_patch16_224``.
    num_classes
        Number of output classes.
    drop_rate
        Dropout before the classifier (the "dropout in the head").
    img_size
        Input side; passed to models that need it (ViTs), ignored by CNNs.
    pretrained_file
        Local ImageNet weights (safetensors or torch file). Nothing is downloaded.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        drop_rate: float = 0.2,
        img_size: int | None = None,
        pretrained_file: str | Path | None = None,
        min_matched_weights: float = 0.9,
        allow_partial_weights: bool = False,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.backbone: nn.Module = _create_backbone(arch, img_size)
        self.pretrained_match: WeightMatch | None = None
        if pretrained_file is not None:
            self.pretrained_match = load_pretrained(
                self.backbone,
                pretrained_file,
                min_fraction=min_matched_weights,
                allow_partial=allow_partial_weights,
            )
        self.num_features = int(self.timm_backbone.num_features)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)

    @property
    def timm_backbone(self) -> TimmBackbone:
        """The backbone seen through timm's model interface (the same object)."""
        return cast(TimmBackbone, self.backbone)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map (used by Grad-CAM) before pooling."""
        return self.timm_backbone.forward_features(x)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled embedding from a feature map."""
        return self.timm_backbone.forward_head(features, pre_logits=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.pool(self.features(x))
        return embeddings, self.head(self.dropout(embeddings))

    def backbone_groups(self) -> list[list[nn.Parameter]]:
        """Backbone parameters in coarse groups, stem first, so later blocks can be unfrozen."""
        named = dict(self.backbone.named_parameters())
        try:
            from timm.models import group_parameters

            matcher = self.timm_backbone.group_matcher(coarse=True)
            groups = group_parameters(self.backbone, matcher)
            ordered = [groups[key] for key in sorted(groups, key=_group_order)]
            return [[named[name] for name in names if name in named] for names in ordered]
        except (AttributeError, NotImplementedError, KeyError):
            params = list(named.values())
            quarter = max(1, math.ceil(len(params) / 4))
            return [params[i : i + quarter] for i in range(0, len(params), quarter)]


def _group_order(key: Any) -> float:
    return float(key) if isinstance(key, int | float) else math.inf


def _create_backbone(arch: str, img_size: int | None) -> nn.Module:
    kwargs: dict[str, Any] = {"num_classes": 0}
    if img_size is not None and _accepts_img_size(arch):
        kwargs["img_size"] = img_size
    return timm.create_model(arch, **kwargs)


class PretrainedMismatchError(ValueError):
    """A pretrained weights file does not fit the architecture (too few keys match)."""


@dataclass(frozen=True)
class WeightMatch:
    """How a pretrained file matched a backbone: tensors loaded out of those it has."""

    matched: int
    expected: int
    shape_mismatch: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: int

    @property
    def fraction(self) -> float:
        return self.matched / self.expected if self.expected else 0.0


_PREFIXES = ("module.", "model.", "backbone.", "image.backbone.", "state_dict.")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise PretrainedMismatchError(f"{path}: not a state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_pretrained(
    backbone: nn.Module,
    path: str | Path,
    *,
    min_fraction: float = 0.9,
    allow_partial: bool = False,
) -> WeightMatch:
    """Load the tensors of ``path`` whose names and shapes fit ``backbone``; count them.

    Why not timm's loader: a file of another architecture went through it with every key
    missing and the log still said the weights loaded. Here names are matched after removing
    common wrapper prefixes (``module.``, ``model.``...), a tensor of the wrong shape is not
    loaded, and the run stops when fewer than ``min_fraction`` of the backbone's tensors were
    found, unless ``allow_partial``.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    PretrainedMismatchError
        If the match is below ``min_fraction`` and ``allow_partial`` is false.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained: no such file {path}")
    source = _read_weights(path)
    own = backbone.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        name = key
        for prefix in _PREFIXES:
            if name.startswith(prefix) and name not in own:
                name = name[len(prefix) :]
        renamed[name] = value
    loadable = {k: v for k, v in renamed.items() if k in own and v.shape == own[k].shape}
    wrong_shape = tuple(sorted(k for k in renamed if k in own and k not in loadable))
    missing = tuple(sorted(k for k in own if k not in loadable))
    match = WeightMatch(
        matched=len(loadable),
        expected=len(own),
        shape_mismatch=wrong_shape,
        missing=missing,
        unexpected=len([k for k in renamed if k not in own]),
    )
    summary = (
        f"{path}: {match.matched} of {match.expected} backbone tensors matched "
        f"({match.fraction:.0%}); {len(wrong_shape)} of the wrong shape, "
        f"{match.unexpected} in the file unused"
    )
    if match.fraction < min_fraction:
        if not allow_partial:
            examples = ", ".join(missing[:5])
            raise PretrainedMismatchError(
                f"{summary}; below the {min_fraction:.0%} required (missing e.g. {examples}). "
                "Is it the weights of another architecture? Pass --allow-partial-weights to "
                "use it anyway."
            )
        logger.warning("%s; partial weights allowed, the rest stays randomly initialised", summary)
    else:
        logger.info("loaded pretrained weights: %s", summary)
    backbone.load_state_dict(loadable, strict=False)
    return match


def _accepts_img_size(arch: str) -> bool:
    """ViT-like models fix their patch grid at build time and need the input size."""
    return any(tag in arch for tag in ("vit", "deit", "beit", "eva", "swin", "maxvit", "coatnet"))


class SequenceModel(nn.Module):
    """Base class: refines slice logits and predicts the study from an ordered slice sequence.

    The refined slice logits are the image-stage logits plus a learned correction, and the
    study logits add a learned term to the maximum refined slice logit. Why: a study is
    positive when any slice is, so starting from "max over slices" makes the patient stage
    useful even with few training studies, and it can only learn to improve on it.
    """

    def __init__(self, embed_dim: int, num_classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.hidden = hidden
        self.project = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(embed_dim + num_classes, hidden), nn.GELU()
        )
        self.slice_head = nn.Linear(hidden, num_classes)
        self.study_head = nn.Linear(2 * hidden, num_classes)
        nn.init.zeros_(self.slice_head.weight)
        nn.init.zeros_(self.slice_head.bias)
        nn.init.zeros_(self.study_head.weight)
        nn.init.zeros_(self.study_head.bias)

    def encode(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Context over slices; subclasses implement it."""
        raise NotImplementedError

    def forward(
        self,
        embeddings: torch.Tensor,
        slice_logits: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if mask is None:
            mask = torch.ones(embeddings.shape[:2], dtype=torch.bool, device=embeddings.device)
        h = self.project(torch.cat([embeddings, slice_logits], dim=-1))
        h = self.encode(h, mask)
        refined = slice_logits + self.slice_head(h)
        m = mask.unsqueeze(-1)
        neg = torch.finfo(refined.dtype).min
        max_h = h.masked_fill(~m, neg).amax(dim=1)
        mean_h = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
        max_logit = refined.masked_fill(~m, neg).amax(dim=1)
        study = max_logit + self.study_head(torch.cat([max_h, mean_h], dim=-1))
        return study, refined


class GRUSequenceModel(SequenceModel):
    """Bidirectional GRU over the ordered slices (the RSNA 2019 winners' second stage)."""

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        hidden: int = 128,
        layers: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(embed_dim, num_classes, hidden, dropout)
        self.gru = nn.GRU(
            hidden, hidden // 2, num_layers=layers, batch_first=True, bidirectional=True
        )

    def encode(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            h, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
        return h + out


class TransformerSequenceModel(SequenceModel):
    """Transformer encoder over the ordered slices with sinusoidal slice-index positions."""

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        hidden: int = 128,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(embed_dim, num_classes, hidden, dropout)
        layer = nn.TransformerEncoderLayer(
            hidden,
            heads,
            dim_feedforward=2 * hidden,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def encode(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = h.shape[1]
        pos = torch.arange(length, device=h.device, dtype=h.dtype).unsqueeze(1)
        freq = torch.exp(
            torch.arange(0, self.hidden, 2, device=h.device, dtype=h.dtype)
            * (-math.log(10000.0) / self.hidden)
        )
        pe = torch.zeros(length, self.hidden, device=h.device, dtype=h.dtype)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        return self.encoder(h + pe, src_key_padding_mask=~mask)


class MaxPoolSequenceModel(SequenceModel):
    """No learned context: study = max over slices. For image-only (folder) datasets."""

    def __init__(self, embed_dim: int, num_classes: int, hidden: int = 8, dropout: float = 0.0):
        super().__init__(embed_dim, num_classes, hidden, dropout)
        for p in self.parameters():
            p.requires_grad_(False)

    def encode(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(h)


SEQUENCE_MODELS: dict[str, Callable[..., SequenceModel]] = {
    "gru": GRUSequenceModel,
    "transformer": TransformerSequenceModel,
    "max_pool": MaxPoolSequenceModel,
}
"""Sequence-model registry: name to constructor ``(embed_dim, num_classes, **params)``."""


def build_image_model(
    arch: str, num_classes: int, *, pretrained_file: str | Path | None = None, **params: Any
) -> ImageModel:
    """Build the image stage from its bundle/config name and hyperparameters."""
    return ImageModel(arch, num_classes, pretrained_file=pretrained_file, **params)


def build_sequence_model(
    arch: str, embed_dim: int, num_classes: int, **params: Any
) -> SequenceModel:
    """Build the patient stage by registered name.

    Raises
    ------
    ValueError
        If ``arch`` is not registered.
    """
    try:
        factory = SEQUENCE_MODELS[arch]
    except KeyError:
        raise ValueError(
            f"sequence model: unknown {arch!r}; known: {sorted(SEQUENCE_MODELS)}"
        ) from None
    return factory(embed_dim, num_classes, **params)
