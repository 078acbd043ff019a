"""Bundles round-trip exactly and are refused when a byte changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.bundle import BundleIntegrityError, export_bundle, load_bundle
from training.classes import CLASS_NAMES, DISCLAIMER_SYNTHETIC
from training.models import build_image_model, build_sequence_model
from training.preprocessing import PreprocessSpec


def _export(out: Path, synthetic: bool = True) -> tuple:
    torch.manual_seed(0)
    image = build_image_model("test_resnet", len(CLASS_NAMES), drop_rate=0.1, img_size=32)
    seq = build_sequence_model("gru", image.num_features, len(CLASS_NAMES), hidden=16)
    with torch.no_grad():  # make the zero-initialised heads matter in the round trip
        for p in seq.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return (
        export_bundle(
            out,
            image_model=image,
            sequence_model=seq,
            image_arch="test_resnet",
            image_params={"drop_rate": 0.1, "img_size": 32},
            sequence_arch="gru",
            sequence_params={"hidden": 16},
            class_names=CLASS_NAMES,
            preprocess=PreprocessSpec(size=32),
            thresholds={name: 0.5 for name in CLASS_NAMES},
            name="unit",
            version="1.2.3",
            synthetic_demo=synthetic,
            metrics={"study": {"auc": {"any": 0.9}}},
            training_data={"studies": 3},
            extra_files={"summary.md": b"# hello\n"},
        ),
        image,
        seq,
    )


def test_round_trip_restores_models_and_metadata(tmp_path: Path) -> None:
    digest, image, seq = _export(tmp_path)
    bundle = load_bundle(tmp_path)
    assert bundle.sha256 == digest
    assert (bundle.name, bundle.version) == ("unit", "1.2.3")
    assert bundle.synthetic_demo and bundle.disclaimer == DISCLAIMER_SYNTHETIC
    assert bundle.class_names == CLASS_NAMES
    assert bundle.thresholds["subdural"] == 0.5
    assert bundle.preprocess == PreprocessSpec(size=32)
    x = torch.randn(5, 3, 32, 32)
    image.eval()
    seq.eval()
    with torch.no_grad():
        emb, logits = image(x)
        study, refined = seq(emb[None], logits[None])
    pred = bundle.predict_volume(x, batch_size=2)
    expected = torch.sigmoid(study[0]).tolist()
    assert list(pred.study_probabilities.values()) == pytest.approx(expected, abs=1e-5)
    assert len(pred.slice_probabilities) == 5
    assert pred.slice_probabilities[4]["ischemic"] == pytest.approx(
        float(torch.sigmoid(refined[0, 4, -1])), abs=1e-5
    )


def test_predict_volume_accepts_hu_slices(tmp_path: Path) -> None:
    _export(tmp_path)
    bundle = load_bundle(tmp_path)
    hu = np.random.default_rng(0).normal(30, 10, size=(3, 64, 64)).astype(np.float32)
    pred = bundle.predict_volume(hu)
    assert set(pred.study_probabilities) == set(CLASS_NAMES)
    assert all(0.0 <= p <= 1.0 for p in pred.study_probabilities.values())


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json", "summary.md"])
def test_changed_file_is_refused_naming_it(tmp_path: Path, victim: str) -> None:
    _export(tmp_path)
    target = tmp_path / victim
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=victim):
        load_bundle(tmp_path)


def test_edited_threshold_is_refused(tmp_path: Path) -> None:
    _export(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config["thresholds"]["any"] = 0.01
    config_path.write_text(json.dumps(config))
    with pytest.raises(BundleIntegrityError, match="config.json"):
        load_bundle(tmp_path)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    _export(tmp_path)
    (tmp_path / "sha256.json").unlink()
    with pytest.raises(BundleIntegrityError, match="manifest"):
        load_bundle(tmp_path)
