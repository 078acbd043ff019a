"""What a run folder records about itself: a log file, per-epoch metrics, versions and commit.

Why: a model is only reproducible when the folder it came from says which code, which library
versions and which epochs made it. ``train.log`` keeps every message of the run (also what
scrolled off a terminal), ``metrics_<stage>.csv`` gets one row per epoch as it ends (so an
interrupted run still shows its curve), and ``environment.json`` names torch, timm, the
project version and the git commit; export copies the latter into the bundle.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import training

LOG_FILE = "train.log"
ENVIRONMENT_FILE = "environment.json"


def git_commit(where: Path | None = None) -> dict[str, Any]:
    """The commit of the checkout holding the ``training`` package, and whether it is dirty.

    Returns ``{"commit": None}`` outside a git checkout or without git.
    """
    root = where or Path(training.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def environment() -> dict[str, Any]:
    """Versions of what trained the model: project, Python, torch, timm, numpy, and git."""
    import numpy
    import timm
    import torch

    return {
        "project_version": training.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "git": git_commit(),
    }


def write_environment(run_dir: Path) -> dict[str, Any]:
    """Write ``environment.json`` into the run folder and return it."""
    env = environment()
    (run_dir / ENVIRONMENT_FILE).write_text(json.dumps(env, indent=2) + "\n")
    return env


@contextmanager
def log_to_file(run_dir: Path) -> Iterator[Path]:
    """Copy every log record of the run into ``run_dir/train.log`` (appending on resume)."""
    path = run_dir / LOG_FILE
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    previous = root.level
    # The file wants INFO even when the console shows only warnings: lower the root level,
    # and hold the existing handlers at the level they effectively had.
    held = [(h, h.level) for h in root.handlers]
    if previous > logging.INFO:
        for other, level in held:
            other.setLevel(max(level, previous))
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        for other, level in held:
            other.setLevel(level)
        handler.close()


class MetricsLog:
    """One CSV row per epoch, written when the epoch ends; TensorBoard too where installed.

    Parameters
    ----------
    path
        The CSV file; rows from an earlier (interrupted) run are kept up to ``resume_after``.
    resume_after
        Epochs already done by a resumed run: later rows of the old file are dropped.
    """

    def __init__(self, path: Path, resume_after: int = 0) -> None:
        self.path = path
        kept: list[Mapping[str, Any]] = []
        if resume_after and path.exists():
            with path.open(newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if int(r["epoch"]) <= resume_after]
        self._rows: list[Mapping[str, Any]] = kept
        self._write()
        self._board = _tensorboard(path.parent / "tensorboard", path.stem)

    def _write(self) -> None:
        fields: list[str] = []
        for row in self._rows:
            fields += [k for k in row if k not in fields]
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields or ["epoch"])
            writer.writeheader()
            writer.writerows(self._rows)

    def add(self, row: Mapping[str, Any]) -> None:
        """Record one epoch (must hold ``epoch``)."""
        self._rows.append(dict(row))
        self._write()
        if self._board is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    self._board.add_scalar(key, value, int(row["epoch"]))
            self._board.flush()


def _tensorboard(folder: Path, tag: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is optional
        return None
    return SummaryWriter(str(folder / tag))
