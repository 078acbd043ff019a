"""Training configuration: defaults here, a TOML/JSON file over them, CLI flags over that.

Why layered: a hospital keeps its recipe in a file under version control and tweaks a flag for
one experiment; the resolved result is saved beside the checkpoints so every run can be
repeated exactly.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from training.augment import AugmentConfig

logger = logging.getLogger(__name__)


@dataclass
class ImageStageConfig:
    """Per-slice CNN/ViT training."""

    arch: str = "resnet18"
    pretrained: str | None = None
    allow_partial_weights: bool = False
    min_matched_weights: float = 0.9
    amp: str = "auto"
    drop_rate: float = 0.3
    loss: str = "bce"
    focal_gamma: float = 2.0
    pos_weighting: bool = True
    sampling: str = "balanced"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    freeze_epochs: int = 1
    unfreeze_groups: int = 0
    scheduler: str = "plateau"
    plateau_patience: int = 1
    early_stopping: int = 5
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class PatientStageConfig:
    """Sequence model over ordered slice embeddings."""

    arch: str = "gru"
    hidden: int = 128
    layers: int = 1
    heads: int = 4
    dropout: float = 0.2
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    early_stopping: int = 8
    slice_loss_weight: float = 1.0
    logit_noise: float = 0.5

    def model_params(self) -> dict[str, Any]:
        """Constructor keyword arguments for the registered sequence model."""
        if self.arch == "gru":
            return {"hidden": self.hidden, "layers": self.layers, "dropout": self.dropout}
        if self.arch == "transformer":
            return {
                "hidden": self.hidden,
                "layers": self.layers,
                "heads": self.heads,
                "dropout": self.dropout,
            }
        return {}


@dataclass
class DataConfig:
    """Where the data is and how it is split (patient-wise)."""

    dicom_dir: str | None = None
    labels: str | None = None
    folders: str | None = None
    patient_regex: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    max_bad_fraction: float = 0.05


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    seed: int = 0
    device: str = "auto"
    threads: int = 2
    size: int = 256
    crop_to_head: bool = True
    windows: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"name": "brain", "centre": 40.0, "width": 80.0},
            {"name": "subdural", "centre": 80.0, "width": 200.0},
            {"name": "bone", "centre": 600.0, "width": 2800.0},
        ]
    )
    target_sensitivity: float = 0.95
    calibrate: bool = True
    skip_patient_stage: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    image: ImageStageConfig = field(default_factory=ImageStageConfig)
    patient: PatientStageConfig = field(default_factory=PatientStageConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _merge(target: Any, values: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in fields(target)}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"config: unknown key {where}{key}")
        current = getattr(target, key)
        if is_dataclass(current) and isinstance(value, dict):
            _merge(current, value, f"{where}{key}.")
        elif is_dataclass(current):
            raise ValueError(f"config: {where}{key} must be a table")
        else:
            setattr(target, key, value)


def _parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> TrainConfig:
    """Defaults, then the file, then ``overrides`` (dotted keys), then ``key=value`` strings.

    Raises
    ------
    ValueError
        On an unknown key, so a typo in a recipe fails loudly instead of being ignored.
    """
    cfg = TrainConfig()
    if path is not None:
        text = Path(path).read_text()
        data = tomllib.loads(text) if Path(path).suffix == ".toml" else json.loads(text)
        _merge(cfg, data, "")
    items = dict(overrides or {})
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value")
        items[key.strip()] = _parse_scalar(value.strip())
    for dotted, value in items.items():
        if value is None:
            continue
        nested: dict[str, Any] = {}
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        _merge(cfg, nested, "")
    return cfg


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved by :meth:`TrainConfig.to_dict`."""
    cfg = TrainConfig()
    _merge(cfg, data, "")
    if isinstance(cfg.image.augment, dict):  # pragma: no cover - defensive
        cfg.image.augment = AugmentConfig(**cfg.image.augment)
    return cfg


def save_config(cfg: TrainConfig, path: Path) -> None:
    """Write the resolved config as JSON beside the checkpoints."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
