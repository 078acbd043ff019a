"""Checks a training run makes before it decodes a single slice.

Why: a typo in ``--arch``, a sensitivity of 1.5 or a missing weights file used to fail only
after minutes of decoding or training. Every option that can be judged from the config alone
is judged here, all at once, and the run stops with one message that lists every problem.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from training.config import TrainConfig

logger = logging.getLogger(__name__)

CHOICES = {
    "image.loss": ("bce", "focal"),
    "image.sampling": ("balanced", "none"),
    "image.scheduler": ("plateau", "cosine"),
    "image.amp": ("auto", "on", "off"),
    "device": ("auto", "cpu", "cuda"),
}


class ConfigError(ValueError):
    """One or more options of a run are invalid; the message lists each one."""


def config_problems(cfg: TrainConfig) -> list[str]:
    """Every problem found in ``cfg``, as ``"option: what is wrong"`` strings (empty when fine).

    Checks value ranges, choices, the timm architecture name, the sequence model name and that
    every named file or folder exists. Cheap: nothing is decoded or built.
    """
    import timm

    from training.models import SEQUENCE_MODELS

    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(
        0.0 < cfg.target_sensitivity < 1.0,
        f"target_sensitivity: must be in (0, 1) (got {cfg.target_sensitivity})",
    )
    need(
        0.0 < cfg.data.val_fraction < 1.0,
        f"data.val_fraction: must be in (0, 1) (got {cfg.data.val_fraction})",
    )
    need(
        0.0 <= cfg.data.test_fraction < 1.0,
        f"data.test_fraction: must be in [0, 1) (got {cfg.data.test_fraction})",
    )
    need(
        cfg.data.val_fraction + cfg.data.test_fraction < 1.0,
        "data.val_fraction + data.test_fraction: must leave a training split (sum < 1)",
    )
    need(
        0.0 <= cfg.data.max_bad_fraction < 1.0,
        f"data.max_bad_fraction: must be in [0, 1) (got {cfg.data.max_bad_fraction})",
    )
    need(cfg.size >= 16, f"size: at least 16 pixels (got {cfg.size})")
    need(cfg.threads >= 1, f"threads: at least 1 (got {cfg.threads})")
    for name, value in (
        ("image.epochs", cfg.image.epochs),
        ("image.batch_size", cfg.image.batch_size),
        ("patient.epochs", cfg.patient.epochs),
        ("patient.batch_size", cfg.patient.batch_size),
    ):
        need(value >= 1, f"{name}: at least 1 (got {value})")
    need(cfg.image.lr > 0, f"image.lr: must be positive (got {cfg.image.lr})")
    need(
        0.0 <= cfg.image.drop_rate < 1.0, f"image.drop_rate: in [0, 1) (got {cfg.image.drop_rate})"
    )
    values: dict[str, str] = {
        "image.loss": cfg.image.loss,
        "image.sampling": cfg.image.sampling,
        "image.scheduler": cfg.image.scheduler,
        "image.amp": cfg.image.amp,
        "device": cfg.device,
    }
    for key, choice in values.items():
        allowed = CHOICES[key]
        ok = choice in allowed or (key == "device" and str(choice).startswith("cuda:"))
        need(ok, f"{key}: one of {', '.join(allowed)} (got {choice!r})")
    if not timm.is_model(cfg.image.arch):
        close = [m for m in timm.list_models(f"*{cfg.image.arch[:4]}*")][:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        problems.append(f"image.arch: {cfg.image.arch!r} is not a timm model{hint}")
    if not cfg.skip_patient_stage:
        need(
            cfg.patient.arch in SEQUENCE_MODELS,
            f"patient.arch: one of {sorted(SEQUENCE_MODELS)} (got {cfg.patient.arch!r})",
        )
    if cfg.image.pretrained is not None:
        need(
            Path(cfg.image.pretrained).is_file(),
            f"image.pretrained: no such file {cfg.image.pretrained}",
        )
    data = cfg.data
    if bool(data.folders) == bool(data.dicom_dir):
        problems.append("data: give either dicom_dir (+ labels) or folders")
    if data.folders:
        need(Path(data.folders).is_dir(), f"data.folders: no such folder {data.folders}")
    if data.dicom_dir:
        need(Path(data.dicom_dir).is_dir(), f"data.dicom_dir: no such folder {data.dicom_dir}")
        need(bool(data.labels), "data.labels: a labels CSV is needed with dicom_dir")
    if data.labels:
        need(Path(data.labels).is_file(), f"data.labels: no such file {data.labels}")
    return problems


def check_config(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` listing every problem of ``cfg``.

    Raises
    ------
    ConfigError
        When :func:`config_problems` finds anything.
    """
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid training options:\n  " + "\n  ".join(problems))


def prepare_run_dir(run_dir: Path, *, overwrite: bool = False, resume: bool = False) -> None:
    """Make sure ``run_dir`` is safe to write into.

    Why: re-using a run folder used to ship the previous run's test metrics inside the new
    bundle. A folder that holds anything is refused unless the run resumes it (same folder,
    checkpoints kept) or ``overwrite`` asks for it to be emptied first.

    Raises
    ------
    ConfigError
        If the folder exists with content and neither ``overwrite`` nor ``resume`` is set, or
        ``resume`` is asked for a folder without a saved config.
    """
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume exclude each other")
    exists = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        if not (run_dir / "config.resolved.json").is_file():
            raise ConfigError(f"{run_dir}: nothing to resume (no config.resolved.json)")
        return
    if exists and not overwrite:
        raise ConfigError(
            f"{run_dir}: run folder exists and is not empty; pass --overwrite to replace it "
            "or --resume to continue it"
        )
    if exists:
        logger.warning("--overwrite: emptying run folder %s", run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
