"""Key images show the Grad-CAM heat-map over exactly the pixels the model saw."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch

from training.bundle import Bundle
from training.explain import grad_cam
from training.preprocessing import hu_volume, order_slices
from worker.reports.key_images import render_key_images
from worker.reports.key_slices import top_slices_for_class

from .conftest import ReadStudy


def _render(read: ReadStudy, bundle: Bundle, volume: object, **kwargs: object):  # type: ignore[no-untyped-def]
    return render_key_images(
        bundle,
        volume,  # type: ignore[arg-type]
        read.result.slice_scores,
        bundle.class_names,
        3,
        flags=read.verdict.flags,
        probabilities=read.result.study_probabilities,
        **kwargs,  # type: ignore[arg-type]
    )


def test_key_images_are_the_top_slices_of_the_flagged_subtype(read_study: ReadStudy) -> None:
    expected = top_slices_for_class(read_study.result.slice_scores, "subdural", 3)
    assert [k.source_sop_instance_uid for k in read_study.key_images] == [
        s.sop_instance_uid for s in expected
    ]
    assert {k.class_name for k in read_study.key_images} == {"subdural"}  # not "any"
    for key in read_study.key_images:
        assert key.pixels.dtype == np.uint8 and key.pixels.shape == (256, 256, 3)


def test_background_is_the_model_inputs_brain_window_and_heat_is_coloured(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    [key] = _render(read_study, demo_bundle, read_study.tensor, annotate=False)[:1]
    position = [s["sop_instance_uid"] for s in read_study.result.slice_scores].index(
        key.source_sop_instance_uid
    )
    x = read_study.tensor[position : position + 1]
    cam, _ = grad_cam(demo_bundle.image_model, x, demo_bundle.class_names.index("subdural"))
    brain = [w.name for w in demo_bundle.preprocess.windows].index("brain")
    spec = demo_bundle.preprocess
    grey = np.clip(x[0, brain].numpy() * spec.std[brain] + spec.mean[brain], 0, 1)
    shown = key.pixels[::2, ::2].astype(int)  # 128 px model input shown at 2x
    cold, hot = cam == 0, cam > 0.5
    assert cold.sum() > 100 and hot.sum() > 100
    expected_grey = np.rint(grey * 255).astype(int)
    for channel in range(3):
        assert np.array_equal(shown[..., channel][cold], expected_grey[cold])
    spread = shown.max(axis=-1) - shown.min(axis=-1)  # grey pixels have none
    assert spread[hot].mean() > 40


def test_hu_input_renders_the_same_pixels_as_the_model_tensor(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    datasets = [pydicom.dcmread(p) for p in read_study.phantom.files]
    ordered = [datasets[i] for i in order_slices(datasets)]
    hu = hu_volume(ordered)
    from_hu = _render(read_study, demo_bundle, hu, source_pixel_spacing=(1.953125, 1.953125))
    from_tensor = _render(read_study, demo_bundle, read_study.tensor)
    for a, b in zip(from_hu, from_tensor, strict=True):
        assert np.array_equal(a.pixels, b.pixels)
        assert a.pixel_spacing_mm is not None and b.pixel_spacing_mm is None
        # the head box is smaller than the 250 mm field, shown at 256 px
        assert 0.3 < a.pixel_spacing_mm[0] < 250 / 256


def test_annotation_only_writes_the_caption_band(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    plain = _render(read_study, demo_bundle, read_study.tensor, annotate=False)[0]
    labelled = _render(
        read_study,
        demo_bundle,
        read_study.tensor,
        demo_label="synthetic demo — not for clinical use",
    )[0]
    assert labelled.annotated and not plain.annotated
    changed_rows = np.nonzero((plain.pixels != labelled.pixels).any(axis=(1, 2)))[0]
    assert changed_rows.size > 0 and changed_rows.max() < 64


def test_without_flags_the_most_probable_class_is_shown(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    probabilities = dict(read_study.result.study_probabilities)
    top = max(probabilities, key=lambda n: probabilities[n])
    keys = render_key_images(
        demo_bundle,
        read_study.tensor,
        read_study.result.slice_scores,
        demo_bundle.class_names,
        2,
        flags={},
        probabilities=probabilities,
    )
    assert len(keys) == 2 and {k.class_name for k in keys} == {top}


def test_scores_of_another_length_are_refused(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="scores"):
        render_key_images(
            demo_bundle,
            read_study.tensor,
            read_study.result.slice_scores[:-1],
            demo_bundle.class_names,
            3,
        )


def test_key_images_from_the_workers_decoded_slices_match_the_model_input(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    from worker.reports.key_images import key_images_for_series

    datasets = [pydicom.dcmread(p) for p in reversed(read_study.phantom.files)]  # any order
    keys = key_images_for_series(
        demo_bundle,
        datasets,
        read_study.result.slice_scores,
        flags=read_study.verdict.flags,
        probabilities=read_study.result.study_probabilities,
    )
    assert [k.pixels.tobytes() for k in keys] == [k.pixels.tobytes() for k in read_study.key_images]


def test_rendering_leaves_no_gradients_on_the_workers_model(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    _render(read_study, demo_bundle, read_study.tensor)
    assert all(p.grad is None for p in demo_bundle.image_model.parameters())


def test_the_input_inference_keeps_is_the_preprocessing_of_the_series(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    from training.preprocessing import preprocess_datasets

    datasets = [pydicom.dcmread(p) for p in read_study.phantom.files]
    expected, _ = preprocess_datasets(datasets, demo_bundle.preprocess)
    assert torch.equal(read_study.tensor, expected)


def test_concurrent_renders_agree_and_leave_the_model_as_they_found_it(
    read_study: ReadStudy, demo_bundle: Bundle
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    before = [p.requires_grad for p in demo_bundle.image_model.parameters()]
    threads_before = torch.get_num_threads()
    with ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(lambda _: _render(read_study, demo_bundle, read_study.tensor), range(4))
        )
    expected = [k.pixels.tobytes() for k in _render(read_study, demo_bundle, read_study.tensor)]
    assert all([k.pixels.tobytes() for k in run] == expected for run in runs)
    assert [p.requires_grad for p in demo_bundle.image_model.parameters()] == before
    assert torch.get_num_threads() == threads_before
