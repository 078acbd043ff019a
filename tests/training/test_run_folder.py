"""A run folder says what made it (log, per-epoch metrics, versions, commit) and can resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from training.bundle import load_bundle
from training.config import ImageStageConfig, load_config
from training.export import export_run
from training.image_stage import CHECKPOINT_FILE, ImageStageTrainer
from training.preprocessing import PreprocessSpec
from training.run import train_run

from .pictures import write_picture_folders
from .test_refusals import PICTURE_RECIPE


def test_run_folder_holds_log_metrics_versions_and_commit(tmp_path: Path) -> None:
    write_picture_folders(tmp_path / "pics", per_class=8)
    cfg = load_config(
        None, PICTURE_RECIPE | {"data.folders": str(tmp_path / "pics"), "image.epochs": 2}
    )
    run = tmp_path / "run"
    train_run(cfg, run)
    log = (run / "train.log").read_text()
    assert "image epoch 2:" in log and "run finished" in log
    with (run / "metrics_image.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_mean_auc", "lr"} <= set(rows[0])
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["timm"] == timm.__version__
    assert len(env["git"]["commit"]) == 40

    bundle_dir = tmp_path / "bundle"
    export_run(run, bundle_dir, name="pics", version="0.1")
    provenance = load_bundle(bundle_dir).config["provenance"]
    assert provenance["git"]["commit"] == env["git"]["commit"]
    assert provenance["torch"] == torch.__version__


class _Stop(Exception):
    pass


def test_image_stage_resumes_after_the_last_finished_epoch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(40, 20, size=(24, 1, 32, 32)).astype(np.float16)
    y = rng.integers(0, 2, size=(24, 1)).astype(np.float32)
    cfg = ImageStageConfig(arch="test_resnet", epochs=3, batch_size=8, freeze_epochs=0)
    spec = PreprocessSpec(size=32)
    device = torch.device("cpu")

    def stop_at_two(row: dict[str, float]) -> None:
        if row["epoch"] == 2:
            raise _Stop

    trainer = ImageStageTrainer(cfg, spec, ("any",), device, seed=0, out_dir=tmp_path)
    with pytest.raises(_Stop):
        trainer.fit(x, y, x, y, on_epoch=stop_at_two)
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)
    assert saved["epoch"] == 1
    first_row = saved["history"][0]

    seen: list[float] = []
    resumed = ImageStageTrainer(cfg, spec, ("any",), device, seed=0, out_dir=tmp_path).fit(
        x, y, x, y, resume=True, on_epoch=lambda row: seen.append(row["epoch"])
    )
    assert seen == [2, 3]  # epoch 1 was not trained again
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == first_row
    assert (tmp_path / "image_stage.safetensors").exists()


def test_cli_refuses_a_used_run_folder_and_resumes_it_with_its_own_config(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from training.cli import main

    write_picture_folders(tmp_path / "pics", per_class=8)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        "size = 32\nskip_patient_stage = true\n[data]\nval_fraction = 0.25\n"
        'test_fraction = 0.25\n[image]\narch = "test_resnet"\nepochs = 1\nbatch_size = 8\n'
    )
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(recipe),
        "--folders",
        str(tmp_path / "pics"),
        "--out",
        str(run),
    ]
    runner = CliRunner()
    assert runner.invoke(main, args).exit_code == 0
    again = runner.invoke(main, args)
    assert again.exit_code != 0 and "--overwrite" in again.output
    mixed = runner.invoke(main, ["train", "--out", str(run), "--resume", "--epochs", "3"])
    assert mixed.exit_code != 0 and "saved config" in mixed.output
    resumed = runner.invoke(main, ["train", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming the image stage after epoch 1" in (run / "train.log").read_text()
    bad = runner.invoke(main, [*args[:-2], "--out", str(tmp_path / "r2"), "--arch", "resnet18x"])
    assert bad.exit_code != 0 and "'resnet18x' is not a timm model" in bad.output


def test_mixed_precision_on_cpu_trains_in_bfloat16(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(40, 20, size=(16, 1, 32, 32)).astype(np.float16)
    y = rng.integers(0, 2, size=(16, 1)).astype(np.float32)
    cfg = ImageStageConfig(arch="test_resnet", epochs=1, batch_size=8, freeze_epochs=0, amp="on")
    trainer = ImageStageTrainer(cfg, PreprocessSpec(size=32), ("any",), torch.device("cpu"))
    assert trainer.amp and trainer.amp_dtype == torch.bfloat16
    result = trainer.fit(x, y, x, y)
    assert np.isfinite(result.history[0]["train_loss"])
