"""The worker's decoding against mutated files (issue #14, hostile input).

``load_series`` promises that a series with slices never raises, however broken its files:
a slice it cannot decode is dropped with its reason. Each input under ``tests/data/fuzz/``
broke that promise (or the worker's memory) before, and was found by ``bench/fuzz``:

- ``rle_*_panics_decoder.dcm``: pylibjpeg-rle (Rust) panics on the RLE segment; pyo3
  raises ``PanicException``, a ``BaseException`` that went past ``except Exception`` and
  failed the whole study;
- ``rle_65535x65535_decompression_bomb.dcm``: 1.3 KB declaring a 65535 x 65535 frame, which
  the decoder would allocate (8 GiB) before finding the segment short.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import fuzz_inputs, fuzz_targets
from training.phantom import PhantomStudy, write_phantom_study
from worker.volume_loader import MAX_DECODED_BYTES, load_series

DATA = Path(__file__).resolve().parents[1] / "data"
FUZZ = sorted((DATA / "fuzz").glob("*.dcm"))


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> PhantomStudy:
    return write_phantom_study(tmp_path_factory.mktemp("good"), slices=3, size=32, seed=3)


def test_every_found_crash_has_its_input_file() -> None:
    assert {path.name for path in FUZZ} >= {
        "rle_rows_beyond_segment_panics_decoder.dcm",
        "rle_flipped_segment_panics_decoder.dcm",
        "rle_65535x65535_decompression_bomb.dcm",
    }
    assert all(path.stat().st_size < 16 * 1024 for path in FUZZ)


@pytest.mark.parametrize("path", FUZZ, ids=[p.name for p in FUZZ])
def test_a_crashing_input_is_dropped_with_its_reason(path: Path) -> None:
    loaded = load_series({"1.2.3.4": path})
    assert loaded.datasets == []
    (dropped,) = loaded.dropped
    assert dropped.sop_instance_uid == "1.2.3.4"
    expected = "declared pixel data" if "bomb" in path.name else "PanicException"
    assert expected in dropped.reason


def test_one_panicking_slice_does_not_cost_the_series(slices: PhantomStudy, tmp_path: Path) -> None:
    files = {f"1.2.{i}": path for i, path in enumerate(slices.files)}
    bad = tmp_path / "bad.dcm"
    shutil.copy(DATA / "fuzz" / "rle_rows_beyond_segment_panics_decoder.dcm", bad)
    files["1.2.99"] = bad
    loaded = load_series(files)
    assert len(loaded.datasets) == len(slices.files)
    assert [d.sop_instance_uid for d in loaded.dropped] == ["1.2.99"]


def test_the_bomb_is_refused_from_its_header_before_decoding() -> None:
    loaded = load_series({"1": DATA / "fuzz" / "rle_65535x65535_decompression_bomb.dcm"})
    assert f"exceeds {MAX_DECODED_BYTES}" in loaded.dropped[0].reason


@pytest.mark.slow
def test_300_mutated_files_never_escape_load_series(slices: PhantomStudy, tmp_path: Path) -> None:
    """In a child process with a 4 GiB address-space cap: no exception, death or hang."""
    corpus = fuzz_inputs.load_corpus(sorted(DATA.glob("*.dcm")), phantom=slices.files)
    result = fuzz_targets.fuzz_decoding(300, seed=14, corpus=corpus, work_dir=tmp_path / "in")
    assert result.inputs == 300
    assert result.problems() == []
    assert result.outcomes["decoded"] > 0 and result.outcomes["dropped"] > 0
    assert {"bomb", "deep_sequence", "gigabyte_tail", "pixel_data"} <= set(result.mutations)
