"""Patient stage: a sequence model over the ordered slice embeddings of each series.

Why a second stage: a bleed seen on one slice is likelier real when its neighbours agree, and
the study decision is a statement about the whole volume. The image model is frozen here; its
embeddings and logits per slice are computed once and the sequence model trains on them.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from training.config import PatientStageConfig
from training.image_stage import seed_everything
from training.losses import MaskedMultiLabelLoss
from training.models import SequenceModel, build_sequence_model

logger = logging.getLogger(__name__)


@dataclass
class SeriesInput:
    """One ordered series as the patient stage sees it."""

    embeddings: np.ndarray  # (L, D)
    logits: np.ndarray  # (L, C) image-stage logits
    slice_labels: np.ndarray  # (L, C), NaN unknown
    study_labels: np.ndarray  # (C,), NaN unknown


@dataclass
class PatientStageResult:
    model: SequenceModel
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)


def collate(
    items: list[SeriesInput], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, ...]:
    """Pad a list of sequences: embeddings, logits, slice labels, mask, study labels."""
    length = max(len(s.embeddings) for s in items)
    b, d, c = len(items), items[0].embeddings.shape[1], items[0].logits.shape[1]
    emb = torch.zeros(b, length, d)
    log = torch.zeros(b, length, c)
    lab = torch.full((b, length, c), math.nan)
    mask = torch.zeros(b, length, dtype=torch.bool)
    for i, s in enumerate(items):
        n = len(s.embeddings)
        emb[i, :n] = torch.from_numpy(s.embeddings)
        log[i, :n] = torch.from_numpy(s.logits)
        lab[i, :n] = torch.from_numpy(s.slice_labels)
        mask[i, :n] = True
    study = torch.from_numpy(np.stack([s.study_labels for s in items]))
    return tuple(t.to(device) for t in (emb, log, lab, mask, study))


def predict_sequences(
    model: SequenceModel,
    items: list[SeriesInput],
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Study probabilities ``(S, C)`` and refined slice probabilities per series."""
    model.eval()
    studies: list[np.ndarray] = []
    slices: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            emb, log, _, mask, _ = collate(chunk, device)
            study, refined = model(emb, log, mask)
            studies.append(torch.sigmoid(study).cpu().numpy())
            probs = torch.sigmoid(refined).cpu().numpy()
            slices.extend(probs[i, : len(s.embeddings)] for i, s in enumerate(chunk))
    return np.concatenate(studies) if studies else np.zeros((0, 0)), slices


class PatientStageTrainer:
    """Train a registered sequence model (``gru`` or ``transformer``) on series.

    The loss is the study loss plus ``slice_loss_weight`` times the refined-slice loss, both
    over known labels only. Training inputs get Gaussian noise on the image logits
    (``logit_noise``), because the image model is over-confident on its own training slices
    and the sequence model must not learn to trust it blindly.
    """

    def __init__(
        self,
        cfg: PatientStageConfig,
        class_names: tuple[str, ...],
        device: torch.device,
        seed: int = 0,
        out_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.class_names = class_names
        self.device = device
        self.seed = seed
        self.out_dir = out_dir

    def fit(
        self,
        train: list[SeriesInput],
        val: list[SeriesInput],
        embed_dim: int,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> PatientStageResult:
        """Train and keep the epoch with the lowest validation loss; ``on_epoch`` gets each
        epoch's metrics row as it ends (the run's metrics CSV)."""
        cfg = self.cfg
        seed_everything(self.seed)
        model = build_sequence_model(
            cfg.arch, embed_dim, len(self.class_names), **cfg.model_params()
        ).to(self.device)
        weights = torch.tensor(
            [2.0 if n == "any" else 1.0 for n in self.class_names], device=self.device
        )
        criterion = MaskedMultiLabelLoss("bce", weights)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = (
            torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay) if params else None
        )
        generator = torch.Generator().manual_seed(self.seed)
        best_state, best_loss, best_epoch, stale = None, math.inf, -1, 0
        history: list[dict[str, float]] = []
        epochs = cfg.epochs if optimizer is not None else 0
        bar = tqdm(range(epochs), desc="patient stage", unit="epoch", leave=False)
        for epoch in bar:
            if optimizer is None:  # epochs is 0 without trainable parameters
                raise RuntimeError("patient stage: no trainable parameters to optimise")
            model.train()
            order = torch.randperm(len(train), generator=generator).tolist()
            running, batches = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                chunk = [train[i] for i in order[start : start + cfg.batch_size]]
                emb, log, lab, mask, study_y = collate(chunk, self.device)
                if cfg.logit_noise:
                    noise = torch.randn(log.shape, generator=generator).to(self.device)
                    log = log + cfg.logit_noise * noise
                loss = self._loss(model, criterion, emb, log, lab, mask, study_y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                optimizer.step()
                running += loss.item()
                batches += 1
            val_loss = self.evaluate_loss(model, criterion, val)
            history.append(
                {"epoch": epoch + 1, "train_loss": running / max(batches, 1), "val_loss": val_loss}
            )
            if on_epoch is not None:
                on_epoch(history[-1])
            bar.set_postfix(train=f"{running / max(batches, 1):.4f}", val=f"{val_loss:.4f}")
            if val_loss < best_loss - 1e-5:
                best_loss, best_epoch, stale = val_loss, epoch + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= cfg.early_stopping:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        if self.out_dir is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(self.out_dir / "patient_stage.safetensors"))
        logger.info("patient stage: best epoch %d val loss %.4f", best_epoch, best_loss)
        return PatientStageResult(model, best_epoch, best_loss, history)

    def _loss(
        self,
        model: SequenceModel,
        criterion: MaskedMultiLabelLoss,
        emb: torch.Tensor,
        log: torch.Tensor,
        lab: torch.Tensor,
        mask: torch.Tensor,
        study_y: torch.Tensor,
    ) -> torch.Tensor:
        study, refined = model(emb, log, mask)
        slice_targets = torch.where(mask.unsqueeze(-1), lab, torch.full_like(lab, math.nan))
        loss = criterion(study, study_y)
        if self.cfg.slice_loss_weight:
            loss = loss + self.cfg.slice_loss_weight * criterion(
                refined.reshape(-1, refined.shape[-1]),
                slice_targets.reshape(-1, slice_targets.shape[-1]),
            )
        return loss

    def evaluate_loss(
        self, model: SequenceModel, criterion: MaskedMultiLabelLoss, items: list[SeriesInput]
    ) -> float:
        """Mean loss over ``items`` in eval mode (no noise)."""
        if not items:
            return math.nan
        model.eval()
        total, batches = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(items), self.cfg.batch_size):
                emb, log, lab, mask, study_y = collate(
                    items[start : start + self.cfg.batch_size], self.device
                )
                total += float(self._loss(model, criterion, emb, log, lab, mask, study_y))
                batches += 1
        return total / batches
