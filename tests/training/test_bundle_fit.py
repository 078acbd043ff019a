"""Bundles made for pictures or for other findings are refused by the worker and warned about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from training.bundle import BundleFitError, check_bundle_dir_fits, export_bundle, load_bundle
from training.classes import CLASS_NAMES
from training.cli import main
from training.models import build_image_model, build_sequence_model
from training.preprocessing import PreprocessSpec
from triage.settings import load_settings
from worker.runtime import WorkerRuntime

from .pictures import truncate, write_picture_folders


def _bundle(out: Path, classes: tuple[str, ...], kind: str) -> Path:
    torch.manual_seed(0)
    image = build_image_model("test_resnet", len(classes), img_size=32)
    seq = build_sequence_model("max_pool", image.num_features, len(classes))
    export_bundle(
        out,
        image_model=image,
        sequence_model=seq,
        image_arch="test_resnet",
        image_params={"img_size": 32},
        sequence_arch="max_pool",
        sequence_params={},
        class_names=classes,
        preprocess=PreprocessSpec(size=32, input_kind=kind),
        thresholds={c: 0.5 for c in classes},
        name="other",
        version="1",
    )
    return out


@pytest.mark.parametrize(
    ("classes", "kind", "why"),
    [
        (("any",), "image", "input kind is 'image'"),
        (("pneumonia",), "ct", "['pneumonia'] are not head-CT findings"),
    ],
)
def test_worker_refuses_a_bundle_that_does_not_fit_head_ct(
    tmp_path: Path, classes: tuple[str, ...], kind: str, why: str
) -> None:
    path = _bundle(tmp_path / "b", classes, kind)
    with pytest.raises(BundleFitError, match=why.replace("[", r"\[").replace("]", r"\]")):
        check_bundle_dir_fits(path)
    settings = load_settings(var_dir=str(tmp_path / "var"))
    runtime = WorkerRuntime(settings, sessions=None, device="cpu")  # type: ignore[arg-type]
    with pytest.raises(BundleFitError, match="does not fit head-CT triage"):
        runtime.bundle(path)


def test_head_ct_bundle_passes_and_predict_warns_on_an_unfit_one(tmp_path: Path) -> None:
    fit = _bundle(tmp_path / "fit", CLASS_NAMES, "ct")
    check_bundle_dir_fits(fit)
    pics = write_picture_folders(tmp_path / "pics", per_class=1)
    unfit = _bundle(tmp_path / "unfit", ("any",), "image")
    result = CliRunner().invoke(main, ["predict", "--bundle", str(unfit), str(pics["normal"][0])])
    assert result.exit_code == 0
    assert "WARNING" in result.output and "the worker would refuse it" in result.output
    clean = CliRunner().invoke(main, ["predict", "--bundle", str(fit), str(pics["normal"][0])])
    assert "WARNING" not in clean.output
    assert load_bundle(unfit).preprocess.input_kind == "image"


def test_evaluate_scores_a_bundle_on_a_held_out_picture_folder(tmp_path: Path) -> None:
    pics = write_picture_folders(tmp_path / "pics", per_class=7)
    truncate(pics["hemorrhage"][2])
    bundle = _bundle(tmp_path / "b", CLASS_NAMES, "ct")
    out = tmp_path / "eval" / "report.json"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--bundle",
            str(bundle),
            "--folders",
            str(tmp_path / "pics"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["study"]["n"] == 13 and report["study"]["auc"]["any"] is not None
    assert [b["file"] for b in report["skipped_files"]] == [str(pics["hemorrhage"][2])]
    assert report["study"]["auc"]["subdural"] is None  # not labelled by the folders
    assert report["study"]["ece"]["any"] is not None
    assert (out.parent / "reliability_study.png").exists()


def test_triage_worker_stops_at_start_with_an_unfit_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triage.cli import main as triage_main

    unfit = _bundle(tmp_path / "pictures", ("any",), "image")
    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TRIAGE_MODEL_BUNDLE", str(unfit))
    result = CliRunner().invoke(triage_main, ["worker", "--no-reconcile"])
    assert result.exit_code != 0
    assert "does not fit head-CT triage" in result.output
    assert not (tmp_path / "var" / "triage.sqlite").exists()  # refused before migrations
