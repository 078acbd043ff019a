"""Nuisance variation: the 'none' family is the original phantom, the others change what is
not the label and keep the label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from training.phantom import write_phantom_dataset, write_phantom_study
from training.phantom_variation import FAMILIES, sample_variation, textured_noise
from training.preprocessing import hu_from_dataset


def _pixels(files: list[Path]) -> np.ndarray:
    return np.stack([hu_from_dataset(pydicom.dcmread(f)) for f in files])


def test_none_family_writes_the_original_phantom(tmp_path: Path) -> None:
    plain = write_phantom_study(tmp_path / "a", seed=3, slices=3, size=64, lesions=("subdural",))
    none = write_phantom_study(
        tmp_path / "b",
        seed=3,
        slices=3,
        size=64,
        lesions=("subdural",),
        variation=sample_variation("none", np.random.default_rng(0)),
    )
    assert np.array_equal(_pixels(plain.files), _pixels(none.files))
    assert plain.slice_labels == none.slice_labels


@pytest.mark.parametrize("family", ["train", "held_out"])
def test_varied_study_differs_but_keeps_its_lesion(tmp_path: Path, family: str) -> None:
    kwargs = {"seed": 4, "slices": 10, "size": 96, "lesions": ("intraparenchymal",)}
    plain = write_phantom_study(tmp_path / "a", **kwargs)  # type: ignore[arg-type]
    varied = write_phantom_study(
        tmp_path / "b",
        variation=sample_variation(family, np.random.default_rng(1)),
        **kwargs,  # type: ignore[arg-type]
    )
    assert not np.allclose(_pixels(plain.files), _pixels(varied.files), atol=20)
    assert varied.study_labels["intraparenchymal"] == 1 and varied.study_labels["any"] == 1
    assert varied.study_labels["subdural"] == 0


def test_held_out_family_shows_what_train_never_does() -> None:
    train, held = FAMILIES["train"], FAMILIES["held_out"]
    assert train.sharp_noise == 0.0 and held.sharp_noise == 1.0
    assert held.streak_hu > train.streak_hu and held.cupping_hu[0] >= train.cupping_hu[1]
    rng = np.random.default_rng(0)
    sharp = textured_noise((64, 64), sample_variation("held_out", rng), rng)
    smooth_draw = sample_variation("train", rng)
    smooth = textured_noise((64, 64), smooth_draw, rng)
    # Sharp-kernel noise decorrelates neighbours (negative lag-1 correlation), smooth does not.
    lag = lambda a: float(np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1])  # noqa: E731
    assert lag(sharp) < 0.0 <= lag(smooth) + 0.05
    assert sharp.std() == pytest.approx(
        sample_variation("held_out", np.random.default_rng(0)).noise_hu, rel=1e-3
    )


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown family 'exotic'"):
        write_phantom_dataset(tmp_path, studies=1, seed=0, slices=2, size=32, variation="exotic")
