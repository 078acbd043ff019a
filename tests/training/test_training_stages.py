"""Both stages learn on a tiny set: the loss goes down and the best checkpoint is kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.augment import AugmentConfig, augment_batch
from training.config import ImageStageConfig, PatientStageConfig
from training.image_stage import ImageStageTrainer
from training.losses import MaskedMultiLabelLoss, inverse_frequency_weights
from training.patient_stage import PatientStageTrainer, SeriesInput
from training.preprocessing import PreprocessSpec
from training.sampling import balanced_weights

NAMES = ("any", "ischemic")


def _tiny_slices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HU slices of a disc of brain; 'any' adds a bright blob, 'ischemic' a dark one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    brain = (yy - 16) ** 2 + (xx - 16) ** 2 < 14**2
    x = np.full((n, 1, 32, 32), -1000.0, dtype=np.float32)
    y = np.zeros((n, 2), dtype=np.float32)
    for i in range(n):
        x[i, 0][brain] = 35.0
        y[i] = rng.random(2) < 0.4
        cy, cx = rng.integers(10, 22, size=2)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < 16
        if y[i, 0]:
            x[i, 0][blob & brain] = 70.0
        if y[i, 1]:
            x[i, 0][(yy - 32 + cy) ** 2 + (xx - cx) ** 2 < 25] = 15.0
        x[i, 0] += rng.normal(0, 3, (32, 32))
    return x.astype(np.float16), y


def test_image_stage_loss_goes_down_on_tiny_set() -> None:
    torch.set_num_threads(2)
    train_x, train_y = _tiny_slices(64, 0)
    val_x, val_y = _tiny_slices(24, 1)
    train_y[0, 1] = np.nan  # unknown labels must not break training
    cfg = ImageStageConfig(
        arch="test_resnet",
        epochs=6,
        batch_size=16,
        lr=3e-3,
        backbone_lr_mult=1.0,
        freeze_epochs=1,
        scheduler="cosine",
        early_stopping=10,
        drop_rate=0.0,
        augment=AugmentConfig(rotate_deg=5.0),
    )
    trainer = ImageStageTrainer(cfg, PreprocessSpec(size=32), NAMES, torch.device("cpu"), seed=0)
    result = trainer.fit(train_x, train_y, val_x, val_y)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.8 * losses[0]
    assert result.history[0]["frozen"] == 1.0 and result.history[-1]["frozen"] == 0.0
    best = min(result.history, key=lambda row: row["val_loss"])
    assert result.best_epoch == best["epoch"]
    assert result.best_val_loss == best["val_loss"]


def test_frozen_epoch_leaves_backbone_unchanged() -> None:
    train_x, train_y = _tiny_slices(16, 2)
    cfg = ImageStageConfig(arch="test_resnet", epochs=1, batch_size=8, freeze_epochs=1)
    trainer = ImageStageTrainer(cfg, PreprocessSpec(size=32), NAMES, torch.device("cpu"))
    model = trainer.build_model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.clone()
    trainer.fit(train_x, train_y, train_x, train_y, model=model)
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(head_before, model.head.weight)


def _series(n: int, seed: int) -> list[SeriesInput]:
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        length = int(rng.integers(4, 9))
        slice_y = (rng.random((length, 2)) < 0.15).astype(np.float32)
        logits = (slice_y * 2 - 1) * 1.5 + rng.normal(0, 1.0, (length, 2))
        emb = rng.normal(0, 1, (length, 8)).astype(np.float32)
        emb[:, :2] += slice_y
        study_y = slice_y.max(axis=0)
        items.append(SeriesInput(emb, logits.astype(np.float32), slice_y, study_y))
    return items


def test_patient_stage_loss_goes_down_for_gru_and_transformer() -> None:
    for arch in ("gru", "transformer"):
        cfg = PatientStageConfig(
            arch=arch,
            hidden=16,
            epochs=15,
            batch_size=8,
            lr=5e-3,
            early_stopping=20,
            logit_noise=0.0,
        )
        result = PatientStageTrainer(cfg, NAMES, torch.device("cpu")).fit(
            _series(40, 0), _series(12, 1), embed_dim=8
        )
        losses = [row["train_loss"] for row in result.history]
        assert losses[-1] < losses[0], arch


def test_focal_loss_down_weights_easy_examples_and_masks_unknown() -> None:
    logits = torch.tensor([[4.0, 0.0], [-4.0, 0.0]])
    targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    bce = MaskedMultiLabelLoss("bce")(logits, targets)
    focal = MaskedMultiLabelLoss("focal", gamma=2.0)(logits, targets)
    assert torch.isfinite(bce) and torch.isfinite(focal)
    assert focal < bce
    known = ~torch.isnan(targets)
    manual = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known])
    assert float(bce) == pytest.approx(float(manual))  # the NaN entry contributes nothing


def test_inverse_frequency_and_balanced_sampling() -> None:
    labels = np.array([[1, 0], [0, 0], [0, 0], [0, 0], [0, 1], [0, np.nan]], dtype=np.float32)
    weights = inverse_frequency_weights(labels)
    assert weights.tolist() == [5.0, 4.0]
    draw = balanced_weights(labels, negative_share=0.5)
    assert draw.sum() == np.float64(1.0) or abs(draw.sum() - 1) < 1e-9
    assert draw[0] == draw[4] == 0.25  # each positive class gets half of the positive share
    assert abs(draw[1] - 0.5 / 4) < 1e-9  # four negatives share the other half


def test_augmentation_keeps_shape_and_air_background() -> None:
    x = torch.full((4, 1, 32, 32), -1024.0)
    x[:, :, 8:24, 8:24] = 40.0
    out = augment_batch(x, AugmentConfig(rotate_deg=15), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert float(out[:, :, 0, 0].max()) <= -1000.0
    assert 20.0 < float(out[:, :, 16, 16].mean()) < 60.0
