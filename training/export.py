"""Turn a finished run folder into a versioned bundle.

Why separate from training: a run can be inspected, re-evaluated and signed off before it is
exported, and export must never retrain or silently change anything.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from training.bundle import export_bundle
from training.classes import DISCLAIMER_SYNTHETIC
from training.models import build_image_model, build_sequence_model
from training.preprocessing import PreprocessSpec

logger = logging.getLogger(__name__)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; is this a finished run folder?") from None


def export_run(
    run_dir: Path,
    bundle_dir: Path,
    *,
    name: str,
    version: str,
    synthetic_demo: bool = False,
    report_split: str = "test",
) -> str:
    """Export ``run_dir`` to ``bundle_dir`` and return the bundle's sha256.

    The metrics stored are those of ``report_split`` (the held-out test split by default, the
    validation split when there is no test split); its ``report.json`` and ``summary.md`` are
    shipped inside the bundle.

    Raises
    ------
    FileNotFoundError
        If the run folder lacks a file export needs.
    """
    run_dir = Path(run_dir)
    description = _read_json(run_dir / "model.json")
    thresholds = _read_json(run_dir / "thresholds.json")
    class_names = tuple(description["class_names"])
    image_cfg, seq_cfg = description["image_model"], description["sequence_model"]
    image = build_image_model(image_cfg["arch"], len(class_names), **image_cfg["params"])
    image.load_state_dict(load_file(str(run_dir / "image_stage.safetensors")))
    sequence = build_sequence_model(
        seq_cfg["arch"], int(seq_cfg["embed_dim"]), len(class_names), **seq_cfg["params"]
    )
    sequence.load_state_dict(load_file(str(run_dir / "patient_stage.safetensors")))
    report_dir = run_dir / f"report_{report_split}"
    if not report_dir.exists():
        report_dir = run_dir / "report_val"
    report = _read_json(report_dir / "report.json")
    metrics = {
        "split": report_dir.name.removeprefix("report_"),
        "study": {k: report["study"][k] for k in ("n", "auc", "weighted_log_loss")},
        "slice": {k: report["slice"][k] for k in ("n", "auc", "weighted_log_loss")},
    }
    summary = (report_dir / "summary.md").read_bytes()
    if synthetic_demo:  # the disclaimer goes wherever the bundle's numbers are shown
        summary = f"**{DISCLAIMER_SYNTHETIC}**\n\n".encode() + summary
    extra = {
        "report.json": (report_dir / "report.json").read_bytes(),
        "summary.md": summary,
    }
    return export_bundle(
        bundle_dir,
        image_model=image,
        sequence_model=sequence,
        image_arch=image_cfg["arch"],
        image_params=image_cfg["params"],
        sequence_arch=seq_cfg["arch"],
        sequence_params=seq_cfg["params"],
        class_names=class_names,
        preprocess=PreprocessSpec.from_dict(description["preprocess"]),
        thresholds=thresholds["study"],
        name=name,
        version=version,
        synthetic_demo=synthetic_demo,
        metrics=metrics,
        training_data=_read_json(run_dir / "training_data.json"),
        hyperparameters={
            "config": _read_json(run_dir / "config.resolved.json"),
            "slice_thresholds": thresholds.get("slice", {}),
            "target_sensitivity": thresholds.get("target_sensitivity"),
        },
        extra_files=extra,
        calibration=_optional_json(run_dir / "calibration.json"),
        provenance=_optional_json(run_dir / "environment.json"),
    )


def _optional_json(path: Path) -> dict[str, Any]:
    """A run file that older run folders may lack: ``{}`` then."""
    return dict(json.loads(path.read_text())) if path.exists() else {}
