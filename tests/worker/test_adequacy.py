"""Adequacy and domain: each way a series falls outside the bundle's domain is named.

Real phantom series (``training.phantom``) are mutated one attribute at a time; the domain
score runs the tiny bundle's real image model over phantoms and over a visibly different
input (a phantom's intensities turned into a uniform soft-tissue block: not a head).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pydicom import dcmread

from training.bundle import load_bundle
from training.input_domain import DEMO_ADEQUACY, embed_series
from training.phantom import write_phantom_study
from worker.adequacy import adequacy_reasons, assess


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    study = write_phantom_study(tmp_path_factory.mktemp("adequate"), slices=24, size=256, seed=3)
    return [dcmread(p) for p in study.files]


def test_demo_phantom_is_adequate(phantom):
    assert adequacy_reasons(phantom, DEMO_ADEQUACY) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: setattr(d, "Modality", "MR"), "modality MR"),
        (lambda d: setattr(d, "BodyPartExamined", "CHEST"), "body part CHEST"),
        (lambda d: setattr(d, "SliceThickness", 1.25), "slice thickness 1.25 mm"),
        (lambda d: setattr(d, "PixelSpacing", [1.5, 1.5]), "pixel spacing 1.5 mm"),
        (lambda d: setattr(d, "Rows", 128), "matrix 128x256"),
        (lambda d: setattr(d, "ContrastBolusAgent", "IOMERON"), "contrast-enhanced"),
        (
            lambda d: setattr(d, "ImageOrientationPatient", [1, 0, 0, 0, 0.5, -0.866]),
            "not axial within 30 degrees (tilt 60 degrees)",
        ),
    ],
)
def test_each_failure_is_not_assessed_with_its_reason(phantom, mutate, expected):
    series = [copy.deepcopy(ds) for ds in phantom]
    for ds in series:
        mutate(ds)
    reasons = adequacy_reasons(series, DEMO_ADEQUACY)
    assert any(expected in r for r in reasons), reasons
    verdict = assess(reasons, None, None)
    assert not verdict.assessed
    assert any(expected in r and r.startswith("not assessed") for r in verdict.reasons)


def test_too_few_slices_and_too_little_coverage_are_named(phantom):
    reasons = adequacy_reasons(phantom[:10], DEMO_ADEQUACY)
    assert "10 slices < 16" in reasons
    assert any(r.startswith("covers 45 mm") for r in reasons)


def test_phantom_in_domain_and_a_non_head_out(tiny_bundle, lesion_studies):
    bundle = load_bundle(tiny_bundle)
    summary = bundle.input_domain.summary
    assert summary is not None
    head = [dcmread(p) for p in lesion_studies("none", seed=7).files]
    in_verdict = assess([], summary, embed_series(bundle, head))
    assert in_verdict.assessed and in_verdict.in_domain
    assert in_verdict.domain_score is not None and in_verdict.domain_score <= summary.cut_off

    block = []
    rng = np.random.default_rng(0)
    for ds in head:
        other = copy.deepcopy(ds)
        shape = (other.Rows, other.Columns)
        pixels = rng.normal(1024 + 300, 150, shape).clip(0, 4000).astype("<i2")
        other.PixelData = pixels.tobytes()
        block.append(other)
    out = assess([], summary, embed_series(bundle, block))
    assert not out.assessed and not out.in_domain
    assert out.domain_score is not None and out.domain_score > summary.cut_off
    assert out.reasons and out.reasons[0].startswith("out of domain: score")


def test_bundle_without_summary_cannot_vouch_for_any_study():
    verdict = assess([], None, np.zeros((3, 4)))
    assert not verdict.in_domain and not verdict.assessed
    assert verdict.reasons == ["bundle carries no summary of its training inputs"]


def test_shipped_demo_bundle_holds_its_phantoms_in_domain(phantom):
    from pathlib import Path

    demo = load_bundle(Path(__file__).resolve().parents[2] / "worker" / "bundles" / "demo")
    summary = demo.input_domain.summary
    assert summary is not None and summary.cut_off == 1.2
    verdict = assess(
        adequacy_reasons(phantom, demo.input_domain.adequacy), summary, embed_series(demo, phantom)
    )
    assert verdict.assessed and verdict.domain_score is not None
    assert verdict.domain_score < 0.8
