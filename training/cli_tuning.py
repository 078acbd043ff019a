"""``training`` commands that tune or judge what a run made, without training it again:
``crossval`` (k-fold cross-validation), ``recalibrate`` (calibration and thresholds of a run)
and ``operating-point`` (new thresholds on an exported bundle). Registered on the group in
``training.cli``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from training.cli_options import data_options, labelled_data, print_level


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or JSON recipe (e.g. training/recipes/real-pictures.toml).",
)
@click.option("--folders", help="Class-per-folder images root.")
@click.option("--dicom-dir", help="RSNA layout: folder of DICOM slices.")
@click.option("--labels", help="RSNA layout: ID,Label CSV.")
@click.option("--folds", type=click.IntRange(2, 50), default=5, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for all folds.")
@click.option("--overwrite", is_flag=True, help="Empty an existing --out first.")
@click.option("--set", "sets", multiple=True, help="Any config key: --set image.epochs=10")
def crossval(
    config_file: Path | None,
    folders: str | None,
    dicom_dir: str | None,
    labels: str | None,
    folds: int,
    out: Path,
    overwrite: bool,
    sets: tuple[str, ...],
) -> None:
    """k-fold cross-validation: AUC per fold, pooled AUC with a bootstrap 95 % interval."""
    from training.config import load_config
    from training.crossval import cross_validate

    overrides = {"data.folders": folders, "data.dicom_dir": dicom_dir, "data.labels": labels}
    try:
        cfg = load_config(config_file, overrides, list(sets))
        summary = cross_validate(cfg, out, folds, overwrite=overwrite)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    echo_crossval(summary)


def echo_crossval(summary: dict[str, Any]) -> None:
    """Print per-fold AUCs, their mean and range, and the pooled AUC with its interval."""
    click.echo(summary["title"])
    for fold in summary["folds"]:
        aucs = "  ".join(
            f"{k}={'n/a' if v is None else f'{v:.3f}'}" for k, v in fold["auc"].items()
        )
        click.echo(f"  fold {fold['fold']} (n={fold['n']}): AUC {aucs}")
    study = summary["study"]
    for name, auc in study["auc"].items():
        if auc is None:
            continue
        low, high = study["auc_ci95"][name]
        mean = summary["fold_auc_mean"][name]
        f_low, f_high = summary["fold_auc_range"][name]
        click.echo(
            f"  {name}: pooled AUC {auc:.3f} (95% CI {low:.3f}-{high:.3f}, n={study['n']}); "
            f"fold mean {mean:.3f}, range {f_low:.3f}-{f_high:.3f}; "
            f"ECE {study['ece'][name]:.3f}; weighted log loss {study['weighted_log_loss']:.3f}"
        )


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--target-sensitivity",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="New target for the thresholds (default: the run's own).",
)
def recalibrate(run_dir: Path, target_sensitivity: float | None) -> None:
    """Re-fit a finished run's calibration, thresholds and reports (no training); then export."""
    from training.recalibrate import recalibrate_run

    report = recalibrate_run(run_dir, target_sensitivity)
    for split, block in report.items():
        print_level(f"{split} study", block["study"])


@click.command("operating-point")
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New bundle folder.")
@click.option("--version", "version", required=True, help="Version of the new bundle.")
@click.option(
    "--target-sensitivity",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Choose thresholds reaching this study sensitivity on the labelled data given.",
)
@click.option(
    "--threshold",
    "explicit",
    multiple=True,
    help="Explicit study threshold, CLASS=VALUE (repeatable); other classes keep theirs.",
)
@data_options
@click.option("--overwrite", is_flag=True, help="Replace --out when it exists.")
def operating_point(
    bundle_dir: Path,
    out: Path,
    version: str,
    target_sensitivity: float | None,
    explicit: tuple[str, ...],
    dicom_dir: Path | None,
    labels: Path | None,
    folders: Path | None,
    overwrite: bool,
) -> None:
    """Write a copy of a bundle with a new operating point: new version, new sha256."""
    from training.bundle import load_bundle
    from training.operating_point import set_operating_point, thresholds_on_data

    if (target_sensitivity is None) == (not explicit):
        raise click.UsageError("give --target-sensitivity (with data) or --threshold, not both")
    how: dict[str, Any]
    if explicit:
        thresholds = {}
        for item in explicit:
            name, sep, value = item.partition("=")
            try:
                thresholds[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise click.UsageError(f"--threshold {item!r}: expected CLASS=VALUE")
        how = {"method": "explicit"}
    else:
        assert target_sensitivity is not None
        loaded = load_bundle(bundle_dir)
        dataset = labelled_data(loaded, dicom_dir, labels, folders)
        thresholds = thresholds_on_data(loaded, dataset, target_sensitivity)
        how = {
            "method": "target_sensitivity",
            "target_sensitivity": target_sensitivity,
            "data": dataset.source,
            "studies": len({s.study_uid for s in dataset.series}),
        }
    try:
        digest = set_operating_point(
            bundle_dir, out, version=version, thresholds=thresholds, how=how, overwrite=overwrite
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    shown = "  ".join(f"{k}={v:.4f}" for k, v in thresholds.items())
    click.echo(f"bundle {out} version {version} sha256 {digest}\nthresholds: {shown}")
