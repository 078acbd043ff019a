"""Options and printing shared by the ``training`` commands (``training.cli`` and
``training.cli_tuning``): the held-out data options, reading that data, and result lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def print_level(title: str, block: dict[str, Any]) -> None:
    """One report level as lines: AUC per class, weighted log loss, calibration error."""
    aucs = "  ".join(f"{k}={'n/a' if v is None else f'{v:.4f}'}" for k, v in block["auc"].items())
    click.echo(f"{title} AUC: {aucs}")
    loss = block["weighted_log_loss"]
    click.echo(f"{title} weighted log loss: {'n/a' if loss is None else f'{loss:.4f}'}")
    eces = block.get("ece") or {}
    if any(v is not None for v in eces.values()):
        text = "  ".join(f"{k}={v:.3f}" for k, v in eces.items() if v is not None)
        click.echo(f"{title} expected calibration error: {text}")


def labelled_data(
    loaded: Any, dicom_dir: Path | None, labels: Path | None, folders: Path | None
) -> Any:
    """The held-out set named by --dicom-dir + --labels or by --folders (exactly one)."""
    from training.datasets import read_folder_dataset, read_rsna_dataset

    if folders is not None and dicom_dir is None and labels is None:
        return read_folder_dataset(folders)
    if dicom_dir is not None and labels is not None and folders is None:
        return read_rsna_dataset(dicom_dir, labels, loaded.class_names, labelled_only=True)
    raise click.UsageError("give --dicom-dir with --labels, or --folders")


def data_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--dicom-dir",
                type=click.Path(exists=True, file_okay=False, path_type=Path),
                help="RSNA layout: DICOM slices (with --labels).",
            ),
            click.option(
                "--labels",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="RSNA layout: ID,Label CSV.",
            ),
            click.option(
                "--folders",
                type=click.Path(exists=True, file_okay=False, path_type=Path),
                help="Class-per-folder pictures (e.g. hemorrhage/ + normal/).",
            ),
        ]
    ):
        func = option(func)
    return func
