"""``training`` command line: synth, train, export, evaluate, predict, explain, demo.

Thin by design: each command parses flags, configures logging and calls one module.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from training.cli_options import data_options, labelled_data, print_level
from training.cli_tuning import crossval, operating_point, recalibrate

logger = logging.getLogger(__name__)

# Passive OpenMP waiting: on a shared 2-core machine, spinning worker threads slow a training
# step down several-fold when other processes run. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _setup(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train, evaluate and export the ICH / ischemic-stroke triage models (offline)."""
    _setup(verbose)


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--studies", type=int, required=True, help="Number of studies.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--slices", type=int, default=24, show_default=True)
@click.option("--size", type=int, default=256, show_default=True)
@click.option("--lesion-probability", type=float, default=0.25, show_default=True)
@click.option(
    "--variation",
    type=click.Choice(["none", "train", "held_out"]),
    default="none",
    show_default=True,
    help="Nuisance variation family (training/phantom_variation.py).",
)
def synth(
    out: Path,
    studies: int,
    seed: int,
    slices: int,
    size: int,
    lesion_probability: float,
    variation: str,
) -> None:
    """Write a labelled phantom set: OUT/dicom/... and OUT/labels.csv (RSNA format)."""
    from training.phantom import write_phantom_dataset

    csv_path = write_phantom_dataset(
        out,
        studies=studies,
        seed=seed,
        slices=slices,
        size=size,
        lesion_probability=lesion_probability,
        variation=variation,
    )
    click.echo(str(csv_path))


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, path_type=Path),
    help="TOML or JSON recipe; flags override it.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder.")
@click.option("--dicom-dir", help="RSNA layout: folder of DICOM slices.")
@click.option("--labels", help="RSNA layout: ID,Label CSV.")
@click.option("--folders", help="Class-per-folder images root.")
@click.option("--patient-regex", help="Regex (one group) finding the patient in file names.")
@click.option("--arch", help="timm model name for the image stage.")
@click.option("--pretrained", help="Local ImageNet weights file for the backbone.")
@click.option("--size", type=int, help="Input side in pixels.")
@click.option("--epochs", type=int, help="Image-stage epochs.")
@click.option("--batch-size", type=int)
@click.option("--lr", type=float, help="Head learning rate.")
@click.option("--backbone-lr-mult", type=float, help="Backbone LR as a fraction of --lr.")
@click.option("--freeze-epochs", type=int, help="Epochs with the backbone frozen.")
@click.option("--unfreeze-groups", type=int, help="Later backbone groups to unfreeze (0 = all).")
@click.option("--loss", type=click.Choice(["bce", "focal"]))
@click.option("--sampling", type=click.Choice(["balanced", "none"]))
@click.option("--scheduler", type=click.Choice(["plateau", "cosine"]))
@click.option("--sequence", type=click.Choice(["gru", "transformer"]), help="Patient stage.")
@click.option(
    "--skip-patient-stage",
    is_flag=True,
    default=None,
    help="Image-only data: study = max over slices.",
)
@click.option("--target-sensitivity", type=float)
@click.option("--seed", type=int)
@click.option("--device", help="auto, cpu or cuda.")
@click.option("--threads", type=int, help="CPU threads (default 2).")
@click.option(
    "--allow-partial-weights",
    is_flag=True,
    default=None,
    help="Use a --pretrained file even when under 90% of the backbone's tensors match.",
)
@click.option(
    "--amp",
    type=click.Choice(["auto", "on", "off"]),
    help="Mixed precision: auto = CUDA only (fp16); on = also CPU (bfloat16).",
)
@click.option("--overwrite", is_flag=True, help="Empty an existing run folder first.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its last image-stage epoch, with its saved config.",
)
@click.option("--set", "sets", multiple=True, help="Any config key: --set image.drop_rate=0.4")
def train(
    config_file: Path | None,
    out: Path,
    sets: tuple[str, ...],
    overwrite: bool,
    resume: bool,
    **flags: Any,
) -> None:
    """Train both stages and write a run folder (export it with `training export`)."""
    from training.config import config_from_dict, load_config
    from training.preflight import ConfigError
    from training.run import train_run

    keys = {
        "dicom_dir": "data.dicom_dir",
        "labels": "data.labels",
        "folders": "data.folders",
        "patient_regex": "data.patient_regex",
        "arch": "image.arch",
        "pretrained": "image.pretrained",
        "epochs": "image.epochs",
        "batch_size": "image.batch_size",
        "lr": "image.lr",
        "backbone_lr_mult": "image.backbone_lr_mult",
        "freeze_epochs": "image.freeze_epochs",
        "unfreeze_groups": "image.unfreeze_groups",
        "loss": "image.loss",
        "sampling": "image.sampling",
        "scheduler": "image.scheduler",
        "sequence": "patient.arch",
        "allow_partial_weights": "image.allow_partial_weights",
        "amp": "image.amp",
    }
    overrides = {keys.get(k, k): v for k, v in flags.items() if v is not None}
    saved = out / "config.resolved.json"
    try:
        if resume and saved.is_file():
            if overrides or sets or config_file:
                raise ConfigError("--resume uses the run's saved config; give no other options")
            cfg = config_from_dict(json.loads(saved.read_text()))
        else:
            cfg = load_config(config_file, overrides, list(sets))
        result = train_run(cfg, out, overwrite=overwrite, resume=resume)
    except ValueError as exc:  # ConfigError, PretrainedMismatchError, BadFileError
        raise click.ClickException(str(exc)) from exc
    for split, block in result.report.items():
        print_level(f"{split} study", block["study"])
    click.echo(f"run folder: {result.run_dir}  ({result.seconds:.0f} s)")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder.")
@click.option("--name", required=True)
@click.option("--version", "version", required=True)
@click.option("--synthetic-demo", is_flag=True, help="Mark as synthetic demo (not clinical).")
def export(run_dir: Path, out: Path, name: str, version: str, synthetic_demo: bool) -> None:
    """Write a versioned, hashed bundle from a finished run folder."""
    from training.export import export_run

    digest = export_run(run_dir, out, name=name, version=version, synthetic_demo=synthetic_demo)
    click.echo(f"bundle {out} sha256 {digest}")


def _bundle_option(func: Any) -> Any:
    return click.option(
        "--bundle",
        type=click.Path(path_type=Path),
        help="Bundle folder (default: $TRIAGE_MODEL_BUNDLE or the demo).",
    )(func)


def _load(bundle: Path | None) -> Any:
    from training.bundle import load_bundle
    from training.evaluate import default_bundle_path

    loaded = load_bundle(bundle or default_bundle_path())
    if loaded.synthetic_demo:
        click.echo(f"NOTE: {loaded.name} {loaded.version}: {loaded.disclaimer}", err=True)
    return loaded


@main.command()
@_bundle_option
@data_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="report.json path.")
@click.option("--plots/--no-plots", default=True, help="Also write PNGs and summary.md.")
@click.option("--threads", type=int, default=2, show_default=True)
def evaluate(
    bundle: Path | None,
    dicom_dir: Path | None,
    labels: Path | None,
    folders: Path | None,
    out: Path,
    plots: bool,
    threads: int,
) -> None:
    """Evaluate a bundle on a held-out set (RSNA layout or class folders); print study AUC,
    weighted log loss and calibration error."""
    from training.evaluate import evaluate_bundle
    from training.reports import json_safe, write_report

    _threads(threads)
    loaded = _load(bundle)
    dataset = labelled_data(loaded, dicom_dir, labels, folders)
    unknown = [n for n in dataset.class_names if n not in loaded.class_names]
    if unknown:
        raise click.ClickException(
            f"the set's classes {unknown} are not predicted by {loaded.name} "
            f"({', '.join(loaded.class_names)})"
        )
    report = evaluate_bundle(loaded, dataset)
    curves = report.pop("_curves")
    report = json_safe(report)
    if plots:
        write_report(out.parent, report, curves, loaded.class_names, loaded.disclaimer)
        if out.name != "report.json":
            (out.parent / "report.json").replace(out)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    print_level("study", report["study"])
    print_level("slice", report["slice"])
    click.echo(f"report: {out}")


@main.command()
@_bundle_option
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write results here.")
@click.option("--threads", type=int, default=2, show_default=True)
def predict(
    bundle: Path | None, files: tuple[Path, ...], json_out: Path | None, threads: int
) -> None:
    """Probabilities for DICOM files, PNG/JPG pictures or study folders."""
    from training.bundle import head_ct_fit_problems
    from training.predict import predict_paths

    _threads(threads)
    loaded = _load(bundle)
    for problem in head_ct_fit_problems(loaded):
        click.echo(
            f"WARNING: {loaded.name} {loaded.version} does not fit head-CT triage: {problem}; "
            "the worker would refuse it",
            err=True,
        )
    results = predict_paths(loaded, files)
    for item in results:
        if "study_uid" in item:
            probs = "  ".join(f"{k}={v:.3f}" for k, v in item["study_probabilities"].items())
            click.echo(f"study {item['study_uid']} ({len(item['slices'])} slices): {probs}")
            click.echo(f"  flagged: {', '.join(item['flags']) or 'none'}")
        else:
            probs = "  ".join(f"{k}={v:.3f}" for k, v in item["probabilities"].items())
            click.echo(f"{item['file']}: {probs}")
    if json_out:
        payload = {
            "bundle": {
                "name": loaded.name,
                "version": loaded.version,
                "sha256": loaded.sha256,
                "disclaimer": loaded.disclaimer,
            },
            "results": results,
        }
        json_out.write_text(json.dumps(payload, indent=2) + "\n")


@main.command()
@_bundle_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG to write.")
@click.option("--class", "class_name", help="Class to explain (default: most probable).")
def explain(bundle: Path | None, file: Path, out: Path, class_name: str | None) -> None:
    """Grad-CAM heat-map over one slice (DICOM or picture), saved as PNG.

    A DICOM slice is scored within its series (the files beside it), exactly as the worker
    scores it; the probability shown is the worker's.
    """
    from training.explain import explain_file

    found = explain_file(_load(bundle), file, out, class_name)
    click.echo(f"{out}: Grad-CAM for {found.class_name} (p={found.probability:.3f})")


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Bundle folder (default: the shipped worker/bundles/demo).",
)
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    default=Path("build/demo-training"),
    show_default=True,
    help="Phantoms, cache and run folder.",
)
@click.option("--studies", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--set", "sets", multiple=True, help="Override a recipe key: --set image.epochs=5")
def demo(out: Path | None, work: Path, studies: int, seed: int, sets: tuple[str, ...]) -> None:
    """Train the synthetic demo bundle end to end (11-30 minutes on 2 CPU cores, by load)."""
    from training.config import _parse_scalar
    from training.demo import build_demo_bundle, default_demo_dir

    overrides = {}
    for item in sets:
        key, _, value = item.partition("=")
        overrides[key.strip()] = _parse_scalar(value.strip())
    digest = build_demo_bundle(
        out or default_demo_dir(), work, studies=studies, seed=seed, overrides=overrides
    )
    click.echo(f"demo bundle sha256 {digest} — synthetic demo, not for clinical use")


@main.command("input-domain")
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    default=Path("build/input-domain"),
    show_default=True,
    help="Where the phantoms are written.",
)
@click.option("--studies", type=int, default=40, show_default=True, help="Phantom studies.")
@click.option("--seed", type=int, default=1, show_default=True, help="The training set's seed.")
@click.option("--held-out-seed", type=int, default=2, show_default=True)
@click.option(
    "--cut-off",
    type=float,
    default=None,
    help="Domain score above which a study is out of domain "
    "(default: DEFAULT_CUT_OFF in training/input_domain.py, where its choice is measured).",
)
def input_domain(
    bundle_dir: Path,
    work: Path,
    studies: int,
    seed: int,
    held_out_seed: int,
    cut_off: float | None,
) -> None:
    """Write a phantom-trained bundle's input domain into it (no retraining; re-hashed)."""
    from training.demo import DEMO_DATA
    from training.input_domain import DEFAULT_CUT_OFF, describe_bundle_domain

    cut_off = DEFAULT_CUT_OFF if cut_off is None else cut_off

    report = describe_bundle_domain(
        bundle_dir,
        work,
        studies=studies,
        seed=seed,
        slices=DEMO_DATA["slices"],
        size=DEMO_DATA["size"],
        held_out_seed=held_out_seed,
        cut_off=cut_off,
        variation=DEMO_DATA["variation"],
    )
    scores = report.held_out_scores
    click.echo(
        f"summary of {report.summary.slices} slices; held-out phantom scores "
        f"{min(scores):.2f}..{max(scores):.2f} (cut-off {cut_off}); bundle sha256 {report.sha256}"
    )


main.add_command(crossval)
main.add_command(recalibrate)
main.add_command(operating_point)

if __name__ == "__main__":  # pragma: no cover
    main()
