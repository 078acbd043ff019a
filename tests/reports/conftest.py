"""A real phantom study read by the real demo bundle, and the DICOM tools that judge our documents.

Built once per session: a 24-slice subdural phantom (``training.phantom``), scored by the
shipped demo bundle through the worker's own ``infer_series`` and priority rules, with
key images rendered by Grad-CAM. Tests build documents from it and hand the files to
dicom3tools ``dciodvfy``, DCMTK ``dsrdump`` and highdicom.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
import torch
from pydicom.dataset import Dataset

from training.bundle import Bundle, load_bundle
from training.phantom import PhantomStudy, write_phantom_study
from triage.settings_sections import DEMO_BUNDLE
from worker.priority import Triage, triage
from worker.reports import KeyImage, ReportInput
from worker.reports.key_images import render_key_images
from worker.study_inference import StudyResult, infer_series

CREATED_AT = datetime(2026, 12, 1, 9, 30, 15, tzinfo=UTC)


@dataclass(frozen=True)
class ReadStudy:
    """A phantom study as the worker leaves it: headers, model input, scores, verdict."""

    phantom: PhantomStudy
    headers: tuple[Dataset, ...]
    tensor: torch.Tensor
    result: StudyResult
    verdict: Triage
    key_images: tuple[KeyImage, ...]


@pytest.fixture(scope="session")
def demo_bundle() -> Bundle:
    return load_bundle(DEMO_BUNDLE)


@pytest.fixture(scope="session")
def read_study(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Bundle) -> ReadStudy:
    folder = tmp_path_factory.mktemp("phantom")
    phantom = write_phantom_study(folder, slices=24, size=128, lesions=("subdural",), seed=11)
    datasets = [pydicom.dcmread(path) for path in phantom.files]
    result = infer_series(demo_bundle, datasets, device="cpu", batch_size=8, keep_input=True)
    verdict = triage(result.study_probabilities, demo_bundle.thresholds)
    tensor = result.model_input  # what the worker holds after inference
    assert tensor is not None
    keys = render_key_images(
        demo_bundle,
        tensor,
        result.slice_scores,
        demo_bundle.class_names,
        3,
        flags=verdict.flags,
        probabilities=result.study_probabilities,
        demo_label=demo_bundle.disclaimer if demo_bundle.synthetic_demo else None,
    )
    headers = tuple(pydicom.dcmread(path, stop_before_pixels=True) for path in phantom.files)
    return ReadStudy(phantom, headers, tensor, result, verdict, tuple(keys))


def bundle_identity(bundle: Bundle) -> dict[str, Any]:
    """The bundle's fields of a :class:`ReportInput`."""
    return {
        "class_names": bundle.class_names,
        "bundle_name": bundle.name,
        "bundle_version": bundle.version,
        "bundle_sha256": bundle.sha256,
        "synthetic_demo": bundle.synthetic_demo,
    }


def report_input(read: ReadStudy, bundle: Bundle, **changes: Any) -> ReportInput:
    """The assessed input for ``read``; ``changes`` replace fields (``dataclasses.replace``)."""
    base = ReportInput(
        headers=read.headers,
        study_version=1,
        **bundle_identity(bundle),
        assessed=True,
        priority=str(read.verdict.priority),
        probabilities=read.result.study_probabilities,
        flags=read.verdict.flags,
        thresholds=read.verdict.thresholds,
        domain_score=0.91,
        slice_scores=tuple(read.result.slice_scores),
        series_instance_uid=read.phantom.series_uid,
        key_images=read.key_images,
        created_at=CREATED_AT,
    )
    return dataclasses.replace(base, **changes)


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dicom3tools ``dciodvfy`` prints for a file (warnings allowed)."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    assert lines, "dciodvfy printed nothing"
    return [line for line in lines if line.startswith("Error")]


def dsrdump(path: Path) -> subprocess.CompletedProcess[str]:
    """DCMTK ``dsrdump`` of an SR or KOS: long values in full, warnings and errors on stderr."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(
        ["dsrdump", "-v", "+Pl", str(path)], capture_output=True, text=True, check=False, env=env
    )
