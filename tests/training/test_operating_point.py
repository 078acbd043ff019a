"""A new operating point is a new bundle version with its own hash; the weights stay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from training.bundle import load_bundle
from training.cli import main
from training.datasets import read_folder_dataset
from training.evaluate import score_dataset
from training.operating_point import thresholds_on_data

from .pictures import write_picture_folders
from .test_bundle import _export


def test_explicit_thresholds_make_a_new_version_with_its_own_hash(tmp_path: Path) -> None:
    original = tmp_path / "v1"
    digest, _, _ = _export(original)
    before = {p.name: p.read_bytes() for p in original.iterdir()}
    out = tmp_path / "v1-night"
    result = CliRunner().invoke(
        main,
        [
            "operating-point",
            str(original),
            "--out",
            str(out),
            "--version",
            "1.2.3-night",
            "--threshold",
            "any=0.7",
            "--threshold",
            "subdural=0.25",
        ],
    )
    assert result.exit_code == 0, result.output
    new = load_bundle(out)
    assert new.version == "1.2.3-night" and new.sha256 != digest
    assert new.sha256 in result.output
    assert new.thresholds["any"] == 0.7 and new.thresholds["subdural"] == 0.25
    assert new.thresholds["epidural"] == 0.5  # not given: kept
    record = new.config["operating_point"]
    assert record["from_sha256"] == digest and record["method"] == "explicit"
    assert (out / "model.safetensors").read_bytes() == before["model.safetensors"]
    assert {p.name: p.read_bytes() for p in original.iterdir()} == before  # untouched


def test_bad_operating_point_requests_are_refused(tmp_path: Path) -> None:
    _export(tmp_path / "v1")
    runner = CliRunner()
    base = ["operating-point", str(tmp_path / "v1"), "--out", str(tmp_path / "v2")]
    same_version = runner.invoke(main, [*base, "--version", "1.2.3", "--threshold", "any=0.4"])
    assert same_version.exit_code != 0 and "new version" in same_version.output
    unknown = runner.invoke(main, [*base, "--version", "2", "--threshold", "pneumonia=0.4"])
    assert unknown.exit_code != 0 and "pneumonia" in unknown.output
    outside = runner.invoke(main, [*base, "--version", "2", "--threshold", "any=1.4"])
    assert outside.exit_code != 0 and "(0, 1)" in outside.output
    assert not (tmp_path / "v2").exists()


def test_target_sensitivity_is_reached_on_the_data_given(tmp_path: Path) -> None:
    _export(tmp_path / "v1")
    write_picture_folders(tmp_path / "pics", per_class=10)
    bundle = load_bundle(tmp_path / "v1")
    dataset = read_folder_dataset(tmp_path / "pics")
    thresholds = thresholds_on_data(bundle, dataset, 0.8)
    probs, _ = score_dataset(bundle, dataset.__class__(dataset.series, bundle.class_names))
    positives = np.array([s.slices[0].labels["any"] == 1 for s in dataset.series])
    caught = probs[positives, 0] >= thresholds["any"]
    assert caught.mean() >= 0.8
    assert thresholds["subdural"] == bundle.thresholds["subdural"]  # not labelled: kept

    out = tmp_path / "v1-sens"
    result = CliRunner().invoke(
        main,
        [
            "operating-point",
            str(tmp_path / "v1"),
            "--out",
            str(out),
            "--version",
            "1.2.3-s80",
            "--target-sensitivity",
            "0.8",
            "--folders",
            str(tmp_path / "pics"),
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["operating_point"]["target_sensitivity"] == 0.8
    assert config["thresholds"]["any"] == thresholds["any"]
