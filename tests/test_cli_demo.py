"""``triage demo --write`` makes a new study each call unless a seed asks for the same one."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from pydicom import dcmread

from triage.cli import main


def _demo(out: Path, *extra: str) -> tuple[set[str], set[str]]:
    """Run the command; the Study and SOP Instance UIDs of the files it wrote."""
    result = CliRunner().invoke(main, ["demo", "--write", str(out), "--slices", "3", *extra])
    assert result.exit_code == 0, result.output
    headers = [dcmread(path, stop_before_pixels=True) for path in sorted(out.glob("*.dcm"))]
    assert len(headers) == 3
    return {str(h.StudyInstanceUID) for h in headers}, {str(h.SOPInstanceUID) for h in headers}


def test_two_calls_without_seed_write_two_different_studies(tmp_path):
    first_study, first_sops = _demo(tmp_path / "a")
    second_study, second_sops = _demo(tmp_path / "b")
    assert len(first_study) == len(second_study) == 1
    assert first_study != second_study
    assert first_sops.isdisjoint(second_sops)


def test_two_calls_with_the_same_seed_write_the_same_study(tmp_path):
    assert _demo(tmp_path / "a", "--seed", "3") == _demo(tmp_path / "b", "--seed", "3")
    assert _demo(tmp_path / "c", "--seed", "3") != _demo(tmp_path / "d", "--seed", "4")


def test_unseeded_demo_keeps_the_same_pixels_under_new_uids(tmp_path):
    _demo(tmp_path / "a")
    _demo(tmp_path / "b")
    [a, b] = (
        [dcmread(p).pixel_array.tobytes() for p in sorted((tmp_path / d).glob("*.dcm"))]
        for d in "ab"
    )
    assert sorted(a) == sorted(b)
