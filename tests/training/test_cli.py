"""The CLI chain on a tiny phantom set: synth, train, export, evaluate, predict, explain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from training.bundle import load_bundle
from training.classes import CLASS_NAMES, DISCLAIMER_SYNTHETIC
from training.cli import main
from training.config import load_config


def _ok(result) -> str:  # noqa: ANN001 - click Result
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_cli_chain_writes_bundle_and_rsna_style_report(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    _ok(
        runner.invoke(
            main,
            [
                "synth",
                str(data),
                "--studies",
                "8",
                "--seed",
                "3",
                "--slices",
                "4",
                "--size",
                "64",
                "--lesion-probability",
                "0.5",
            ],
        )
    )
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        'size = 32\n[image]\narch = "test_resnet"\nepochs = 3\nbatch_size = 8\n'
        "[patient]\nhidden = 16\nepochs = 2\n"
    )
    run = tmp_path / "run"
    _ok(
        runner.invoke(
            main,
            [
                "train",
                "--config",
                str(recipe),
                "--out",
                str(run),
                "--dicom-dir",
                str(data / "dicom"),
                "--labels",
                str(data / "labels.csv"),
                "--epochs",
                "1",
                "--sequence",
                "transformer",
                "--set",
                "data.val_fraction=0.25",
                "--set",
                "data.test_fraction=0.25",
            ],
        )
    )
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert resolved["image"]["epochs"] == 1  # flag beats file
    assert resolved["image"]["batch_size"] == 8  # file beats default
    assert resolved["patient"]["arch"] == "transformer"
    assert (run / "report_val" / "roc_study.png").stat().st_size > 1000
    assert (run / "report_val" / "confusion_study.png").exists()

    bundle_dir = tmp_path / "bundle"
    _ok(
        runner.invoke(
            main,
            [
                "export",
                str(run),
                "--out",
                str(bundle_dir),
                "--name",
                "t",
                "--version",
                "0.0.1",
                "--synthetic-demo",
            ],
        )
    )
    bundle = load_bundle(bundle_dir)
    assert bundle.synthetic_demo and bundle.disclaimer == DISCLAIMER_SYNTHETIC
    assert set(bundle.thresholds) == set(CLASS_NAMES)
    assert bundle.config["training_data"]["studies"] == 8

    report_path = tmp_path / "eval" / "report.json"
    out = _ok(
        runner.invoke(
            main,
            [
                "evaluate",
                "--bundle",
                str(bundle_dir),
                "--dicom-dir",
                str(data / "dicom"),
                "--labels",
                str(data / "labels.csv"),
                "--out",
                str(report_path),
            ],
        )
    )
    assert "weighted log loss" in out
    report = json.loads(report_path.read_text())
    assert set(report["study"]["auc"]) == set(CLASS_NAMES)
    assert isinstance(report["study"]["weighted_log_loss"], float)
    assert set(report["slice"]["auc"]) == set(CLASS_NAMES)
    assert report["bundle"]["disclaimer"] == DISCLAIMER_SYNTHETIC

    study_dir = data / "dicom" / "00000"
    predictions = tmp_path / "pred.json"
    out = _ok(
        runner.invoke(
            main,
            ["predict", "--bundle", str(bundle_dir), str(study_dir), "--json", str(predictions)],
        )
    )
    assert "study " in out
    payload = json.loads(predictions.read_text())
    assert len(payload["results"]) == 1 and len(payload["results"][0]["slices"]) == 4

    png = tmp_path / "cam.png"
    first = sorted(study_dir.glob("*.dcm"))[0]
    _ok(
        runner.invoke(
            main,
            [
                "explain",
                "--bundle",
                str(bundle_dir),
                str(first),
                "--out",
                str(png),
                "--class",
                "subdural",
            ],
        )
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_file_flags_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"seed": 5, "image": {"lr": 0.01}}))
    cfg = load_config(path, {"image.lr": 0.02}, ["patient.hidden=32"])
    assert (cfg.seed, cfg.image.lr, cfg.patient.hidden) == (5, 0.02, 32)
    with pytest.raises(ValueError, match="image.lrr"):
        load_config(None, {"image.lrr": 1})


def test_cli_trains_on_class_folders_and_predicts_a_picture(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):
        for folder, value in (("Ischaemic", 90), ("Non Ischaemic", 160)):
            img = np.clip(rng.normal(value, 20, (40, 40)), 0, 255).astype(np.uint8)
            path = tmp_path / "Train2" / folder / f"p{i}_{value}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
    runner = CliRunner()
    run = tmp_path / "run"
    _ok(
        runner.invoke(
            main,
            [
                "train",
                "--folders",
                str(tmp_path / "Train2"),
                "--out",
                str(run),
                "--arch",
                "test_resnet",
                "--size",
                "32",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--skip-patient-stage",
                "--loss",
                "focal",
                "--sampling",
                "none",
                "--set",
                "data.val_fraction=0.25",
                "--set",
                "data.test_fraction=0.25",
            ],
        )
    )
    _ok(
        runner.invoke(
            main,
            ["export", str(run), "--out", str(tmp_path / "b"), "--name", "isch", "--version", "1"],
        )
    )
    bundle = load_bundle(tmp_path / "b")
    assert bundle.class_names == ("ischemic",)
    assert bundle.preprocess.input_kind == "image"
    assert not bundle.synthetic_demo
    out = _ok(
        runner.invoke(
            main,
            [
                "predict",
                "--bundle",
                str(tmp_path / "b"),
                str(tmp_path / "Train2" / "Ischaemic" / "p0_90.png"),
            ],
        )
    )
    assert "ischemic=" in out
