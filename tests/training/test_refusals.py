"""A run refuses what does not fit, early and by name: options, weights, folders, files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from training.config import load_config
from training.datasets import read_rsna_dataset
from training.models import PretrainedMismatchError, build_image_model
from training.phantom import write_phantom_dataset
from training.preflight import ConfigError, prepare_run_dir
from training.run import train_run
from training.slice_cache import BadFileError

from .pictures import truncate, write_picture_folders

PICTURE_RECIPE = {
    "size": 32,
    "skip_patient_stage": True,
    "data.val_fraction": 0.25,
    "data.test_fraction": 0.25,
    "image.arch": "test_resnet",
    "image.epochs": 1,
    "image.batch_size": 8,
}


def test_every_bad_option_is_named_before_anything_is_decoded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = load_config(
        None,
        {
            "data.folders": str(tmp_path / "nowhere"),
            "target_sensitivity": 1.5,
            "image.arch": "resnet18x",
            "image.pretrained": str(tmp_path / "missing.safetensors"),
            "data.val_fraction": 0.0,
        },
    )
    with pytest.raises(ConfigError) as caught:
        train_run(cfg, run)
    message = str(caught.value)
    for expected in (
        "target_sensitivity: must be in (0, 1) (got 1.5)",
        "image.arch: 'resnet18x' is not a timm model",
        "image.pretrained: no such file",
        "data.val_fraction: must be in (0, 1) (got 0.0)",
        "data.folders: no such folder",
    ):
        assert expected in message
    assert not run.exists()  # refused before the run folder (and any cache) was made


def test_pretrained_file_of_another_architecture_is_refused_with_the_count(
    tmp_path: Path,
) -> None:
    other = build_image_model("test_convnext", 2).backbone.state_dict()
    wrong = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in other.items()}, str(wrong))
    with pytest.raises(PretrainedMismatchError, match=r"\b0 of \d+ backbone tensors matched"):
        build_image_model("test_resnet", 2, pretrained_file=wrong)

    model = build_image_model("test_resnet", 2, pretrained_file=wrong, allow_partial_weights=True)
    assert model.pretrained_match is not None and model.pretrained_match.matched == 0


def test_pretrained_file_with_a_wrapper_prefix_loads_every_tensor(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_image_model("test_resnet", 2).backbone.state_dict()
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.items()}}, path)
    torch.manual_seed(2)
    model = build_image_model("test_resnet", 2, pretrained_file=path)
    match = model.pretrained_match
    assert match is not None and match.matched == match.expected > 0
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.items())


def test_existing_run_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "report_test").mkdir()
    (run / "report_test" / "report.json").write_text("{}")
    with pytest.raises(ConfigError, match="--overwrite"):
        prepare_run_dir(run)
    with pytest.raises(ConfigError, match="nothing to resume"):
        prepare_run_dir(run, resume=True)
    prepare_run_dir(run, overwrite=True)
    assert run.is_dir() and not any(run.iterdir())


def test_truncated_picture_is_skipped_by_name_and_too_many_refuse(tmp_path: Path) -> None:
    files = write_picture_folders(tmp_path / "pics", per_class=10)
    broken = files["normal"][3]
    truncate(broken)
    cfg = load_config(None, PICTURE_RECIPE | {"data.folders": str(tmp_path / "pics")})
    train_run(cfg, tmp_path / "run")
    problems = json.loads((tmp_path / "run" / "data_problems.json").read_text())
    assert [p["file"] for p in problems["bad_files"]] == [str(broken)]
    assert problems["bad_files"][0]["reason"]  # e.g. "OSError: image file is truncated"
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert sum(len(v) for v in split.values()) == 19  # the broken picture is in no split

    strict = load_config(
        None,
        PICTURE_RECIPE | {"data.folders": str(tmp_path / "pics"), "data.max_bad_fraction": 0.0},
    )
    with pytest.raises(BadFileError, match=str(broken.name)):
        train_run(strict, tmp_path / "run2")


def test_label_rows_without_a_file_are_reported(tmp_path: Path) -> None:
    labels = write_phantom_dataset(tmp_path / "ph", studies=2, seed=5, slices=3, size=32)
    with labels.open("a", newline="") as handle:
        csv.writer(handle).writerow(["ID_1.2.3.999_any", "1"])
    dataset = read_rsna_dataset(tmp_path / "ph" / "dicom", labels)
    assert dataset.missing_files == ("ID_1.2.3.999",)
    assert dataset.summary()["missing_files"] == 1
