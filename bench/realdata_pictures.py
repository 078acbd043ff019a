"""Real-picture recipe, k-fold cross-validated: ``python -m bench.realdata_pictures ../shared/data``.

``make realdata`` runs it. It trains the class-per-folder recipe
``training/recipes/real-pictures.toml`` on ``headct-hemorrhage-pictures`` (100 real slices,
50 hemorrhage / 50 normal) with 5-fold cross-validation, and prints each fold's test AUC,
their mean and range, and the pooled AUC over all 100 held-out pictures with a bootstrap
95 % interval, its calibration error and log loss. The pictures are read where they lie;
the fold models go to ``build/realdata-pictures`` (ignored by git) and are never committed.
The figures are also written to ``bench/results/realdata-pictures-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: shared CPU cores

from bench.dicom_peers import REPO_ROOT  # noqa: E402
from training.cli_tuning import echo_crossval  # noqa: E402
from training.config import load_config  # noqa: E402
from training.crossval import cross_validate  # noqa: E402
from training.reports import json_safe  # noqa: E402

DATASET = "headct-hemorrhage-pictures"
RECIPE = REPO_ROOT / "training" / "recipes" / "real-pictures.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the shared data folder (../shared/data)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "realdata-pictures")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    folders = args.data / DATASET
    if not folders.is_dir():
        print(f"{folders}: not found; nothing to cross-validate", file=sys.stderr)
        return 1
    cfg = load_config(RECIPE, {"data.folders": str(folders)})
    started = time.monotonic()
    summary = cross_validate(cfg, args.work, args.folds, overwrite=True)
    seconds = time.monotonic() - started
    echo_crossval(summary)
    print(f"  {args.folds} folds trained and tested in {seconds:.0f} s; reports in {args.work}")
    if not args.no_save:
        out = REPO_ROOT / "bench" / "results" / f"realdata-pictures-{time.strftime('%Y%m%d')}.json"
        record = {
            "recipe": str(RECIPE.relative_to(REPO_ROOT)),
            "dataset": DATASET,
            "folds": summary["folds"],
            "fold_auc_mean": summary["fold_auc_mean"],
            "fold_auc_range": summary["fold_auc_range"],
            "pooled_auc": summary["study"]["auc"],
            "pooled_auc_ci95": summary["study"]["auc_ci95"],
            "pooled_ece": summary["study"]["ece"],
            "pooled_weighted_log_loss": summary["study"]["weighted_log_loss"],
            "seconds": seconds,
        }
        out.write_text(json.dumps(json_safe(record), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
