"""Patient-wise train/validation/test split.

Why patient-wise: slices of one study, and studies of one patient, are near-duplicates; if they
sit on both sides of a split, validation measures memory, not generalisation. Patients are
shuffled with the seed and then dealt greedily so that each split gets its share of studies
and of positives for every class.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from training.datasets.records import LabelledDataset

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def split_by_patient(
    dataset: LabelledDataset, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Assign every series to a split so that no patient (hence no study) is in two.

    Returns
    -------
    dict[str, list[str]]
        ``{"train": [...], "val": [...], "test": [...]}`` of SeriesInstanceUIDs.

    Raises
    ------
    ValueError
        If the fractions leave nothing for training.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be in [0, 1) (got {val_fraction}, {test_fraction})"
        )
    labels = np.nan_to_num(dataset.series_labels(), nan=0.0)
    by_patient: dict[str, list[int]] = defaultdict(list)
    for index, series in enumerate(dataset.series):
        by_patient[series.patient_id].append(index)
    patients = sorted(by_patient)
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    targets = {
        "train": 1 - val_fraction - test_fraction,
        "val": val_fraction,
        "test": test_fraction,
    }
    # Each patient's profile: one unit for its series, plus its positives per class.
    totals = np.concatenate([[len(dataset.series)], labels.sum(axis=0)]) + 1e-9
    filled = {name: np.zeros_like(totals) for name in SPLITS}
    assigned: dict[str, list[str]] = {name: [] for name in SPLITS}
    for patient in patients:
        rows = by_patient[patient]
        profile = np.concatenate([[len(rows)], labels[rows].sum(axis=0)])
        # The split furthest below its target on the dimensions this patient contributes to.
        relevant = profile > 0
        deficits = {
            name: float(np.mean((targets[name] - filled[name] / totals)[relevant]))
            for name in SPLITS
            if targets[name] > 0
        }
        chosen = max(deficits, key=lambda name: deficits[name])
        filled[chosen] += profile
        assigned[chosen].extend(dataset.series[i].series_uid for i in rows)
    logger.info(
        "patient-wise split: %s",
        {name: len(uids) for name, uids in assigned.items()},
    )
    return assigned
