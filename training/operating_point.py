"""A new operating point on an exported bundle, without retraining: a new version, a new hash.

Why: a site often wants a different trade-off than the one chosen at training (more
sensitivity for a stroke unit, fewer false alarms at night), and it must be able to say which
thresholds produced each result. The weights are kept byte for byte; the copy gets the new
thresholds, its own version, a record of where it came from, and a fresh manifest, so the
worker stores a different sha256 for every result it makes with it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training.aggregate import studies_from_series
from training.bundle import Bundle, amend_bundle, load_bundle
from training.datasets.records import LabelledDataset
from training.thresholds import thresholds_for_sensitivity

logger = logging.getLogger(__name__)


def thresholds_on_data(
    bundle: Bundle, dataset: LabelledDataset, target_sensitivity: float
) -> dict[str, float]:
    """Study-level thresholds reaching ``target_sensitivity`` on ``dataset`` for each class it
    labels (the bundle's own thresholds kept for the others).

    Raises
    ------
    ValueError
        If the target is not in (0, 1).
    """
    from training.evaluate import score_dataset

    if not 0.0 < target_sensitivity < 1.0:
        raise ValueError(f"target_sensitivity: must be in (0, 1) (got {target_sensitivity})")
    names = bundle.class_names
    aligned = LabelledDataset(dataset.series, names, dataset.kind, dataset.source)
    series_probs, _ = score_dataset(bundle, aligned)
    _, probs, labels = studies_from_series(
        [s.study_uid for s in aligned.series], series_probs, aligned.series_labels()
    )
    found = thresholds_for_sensitivity(labels, probs, names, target_sensitivity)
    labelled = {n for j, n in enumerate(names) if np.any(~np.isnan(labels[:, j]))}
    return {n: (found[n] if n in labelled else bundle.thresholds[n]) for n in names}


def set_operating_point(
    bundle_dir: Path,
    out_dir: Path,
    *,
    version: str,
    thresholds: Mapping[str, float],
    how: Mapping[str, Any],
    overwrite: bool = False,
) -> str:
    """Copy ``bundle_dir`` to ``out_dir`` with new study thresholds and version; return the
    new bundle's sha256.

    Parameters
    ----------
    thresholds
        Class name to threshold in (0, 1); classes not given keep the bundle's.
    how
        How the thresholds were chosen (target sensitivity and data, or "explicit"), stored
        in the new bundle's ``operating_point`` record.

    Raises
    ------
    ValueError
        On an unknown class, a threshold outside (0, 1), an empty or unchanged version, or
        an ``out_dir`` that exists without ``overwrite``.
    """
    bundle = load_bundle(bundle_dir)
    unknown = sorted(set(thresholds) - set(bundle.class_names))
    if unknown:
        raise ValueError(f"thresholds: {unknown} are not classes of this bundle")
    bad = {k: v for k, v in thresholds.items() if not 0.0 < float(v) < 1.0}
    if bad:
        raise ValueError(f"thresholds: must be in (0, 1) (got {bad})")
    if not version or version == bundle.version:
        raise ValueError(f"version: give a new version (the bundle is {bundle.version!r})")
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(bundle_dir).resolve():
        raise ValueError("out: must differ from the bundle (the original stays as it was)")
    if out_dir.exists():
        if not overwrite:
            raise ValueError(f"{out_dir}: exists; pass --overwrite to replace it")
        shutil.rmtree(out_dir)
    shutil.copytree(bundle_dir, out_dir)
    merged = bundle.thresholds | {k: float(v) for k, v in thresholds.items()}
    record = {
        "from_version": bundle.version,
        "from_sha256": bundle.sha256,
        "set_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "previous_thresholds": bundle.thresholds,
        **dict(how),
    }
    digest = amend_bundle(
        out_dir,
        config_updates={"version": version, "thresholds": merged, "operating_point": record},
        files={},
    )
    logger.info(
        "bundle %s %s -> %s: thresholds %s (sha256 %s)",
        bundle.name,
        bundle.version,
        version,
        merged,
        digest,
    )
    return digest
