"""Explain = serve: the probability shown is the worker's, the heat-map lies on what it saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from click.testing import CliRunner

from training.bundle import load_bundle
from training.cli import main
from training.demo import default_demo_dir
from training.explain import explain_slice, grad_cam
from training.phantom import write_phantom_study
from training.preprocessing import apply_windows, head_box, hu_from_dataset, resize_stack
from worker.study_inference import infer_series


@pytest.fixture(scope="module")
def demo():  # noqa: ANN201 - the Bundle type
    return load_bundle(default_demo_dir())


def test_explained_probability_is_the_workers_for_that_slice(demo, tmp_path: Path) -> None:  # noqa: ANN001
    study = write_phantom_study(
        tmp_path / "study", seed=11, slices=8, size=96, lesions=("subdural",)
    )
    datasets = [pydicom.dcmread(f) for f in study.files]
    served = infer_series(demo, datasets, device="cpu", batch_size=16)
    by_sop = {row["sop_instance_uid"]: row for row in served.slice_scores}
    for path in (study.files[2], study.files[5]):
        sop = str(pydicom.dcmread(path).SOPInstanceUID)
        for name in ("subdural", "any"):
            found = explain_slice(demo, path, name)
            assert found.probability == pytest.approx(by_sop[sop]["scores"][name], abs=2e-6)
            assert found.slice_index == by_sop[sop]["index"]


def test_heat_map_lies_on_the_cropped_pixels_the_model_saw(demo, tmp_path: Path) -> None:  # noqa: ANN001
    study = write_phantom_study(tmp_path / "study", seed=12, slices=6, size=128)
    target = study.files[3]
    found = explain_slice(demo, target, "any")
    size = demo.preprocess.size
    assert found.cam.shape == found.seen.shape == (size, size)

    # Independently: the series' HU, one head box for all slices, resized, brain window.
    volume = np.stack([hu_from_dataset(pydicom.dcmread(f)) for f in study.files])
    top, bottom, left, right = head_box(volume)
    assert (bottom - top) < volume.shape[1]  # the worker crops: a plain resize would differ
    crop = resize_stack(torch.from_numpy(volume[3:4, top:bottom, left:right]), size)
    brain = apply_windows(crop, demo.preprocess)[0, 0].numpy()
    expected = brain * demo.preprocess.std[0] + demo.preprocess.mean[0]
    assert np.allclose(found.seen, np.clip(expected, 0, 1), atol=1e-5)


def test_grad_cam_keeps_its_signature_and_cli_writes_the_png(demo, tmp_path: Path) -> None:  # noqa: ANN001
    x = torch.zeros(1, 3, demo.preprocess.size, demo.preprocess.size)
    cam, prob = grad_cam(demo.image_model, x, 0)
    assert cam.shape == (demo.preprocess.size,) * 2 and 0.0 <= prob <= 1.0

    study = write_phantom_study(tmp_path / "study", seed=13, slices=4, size=64)
    png = tmp_path / "cam.png"
    result = CliRunner().invoke(
        main,
        ["explain", "--bundle", str(default_demo_dir()), str(study.files[1]), "--out", str(png)],
    )
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
