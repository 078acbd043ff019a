"""Domain scores of a bundle over phantoms and real scans: where the cut-off falls.

Run ``python -m bench.domain_scores ../shared/data`` (optionally ``--bundle``). Prints one
row per series or slice: the domain score (``training.input_domain``), the bundle's cut-off
and whether the study would count as in domain. Real data are only read, never stored.
The held-out phantoms are written to a temporary folder with a seed the summary never saw.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from training.bundle import Bundle, load_bundle
from training.input_domain import embed_series
from training.phantom import write_phantom_study

DEMO_BUNDLE = Path(__file__).resolve().parents[1] / "worker" / "bundles" / "demo"
SERIES = {
    "GE human head (tilted)": "headct-ge-human-tilt",
    "Philips physical phantom S2010": "headct-philips-phantom-study/S2010",
}
SLICE_SETS = {
    "RSNA ICH slice": "rsna-ich-slices",
    "CT-ICH hemorrhage slice": "ctich-physionet-hemorrhage/images",
}


def _read(folder: Path) -> list[Dataset]:
    skip = {"PROVENANCE.md", "SHA256SUMS", "labels.csv"}
    return [dcmread(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name not in skip]


def _row(bundle: Bundle, name: str, datasets: list[Dataset]) -> tuple[str, int, float]:
    score = bundle.input_domain.summary.score(embed_series(bundle, datasets))  # type: ignore[union-attr]
    return name, len(datasets), score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="The shared data folder.")
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    parser.add_argument("--phantoms", type=int, default=6, help="Held-out phantom studies.")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    bundle = load_bundle(args.bundle)
    summary = bundle.input_domain.summary
    if summary is None:
        raise SystemExit(f"{args.bundle}: no input-domain summary (run `training input-domain`)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.phantoms):
            size, slices = (512, 32) if i % 2 else (256, 24)
            study = write_phantom_study(Path(tmp) / str(i), slices=slices, size=size, seed=900 + i)
            datasets = [dcmread(p) for p in study.files]
            rows.append(_row(bundle, f"phantom seed {900 + i} ({size} px)", datasets))
    for name, folder in SERIES.items():
        rows.append(_row(bundle, name, _read(args.data / folder)))
    for name, folder in SLICE_SETS.items():
        for ds in _read(args.data / folder):
            rows.append(_row(bundle, f"{name} {Path(str(ds.filename)).stem}", [ds]))
    print(f"bundle {bundle.name} {bundle.version} sha256 {bundle.sha256[:12]}")
    print(f"cut-off {summary.cut_off} (summary of {summary.slices} slices)")
    print(f"{'input':<44} {'slices':>6} {'score':>8}  domain")
    for name, count, score in rows:
        verdict = "in" if score <= summary.cut_off else "OUT"
        print(f"{name:<44} {count:>6} {score:>8.2f}  {verdict}")


if __name__ == "__main__":
    main()
