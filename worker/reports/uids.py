"""Deterministic UIDs of the result documents, derived from the prediction key.

Why deterministic: a delivery may be retried after a crash or a lost acknowledgement, and the
PACS must see the same SOP Instance UIDs again (it replaces or ignores them) instead of a
second report. The key is the prediction's (study, version, bundle sha256) plus the kind of
destination, because different kinds of destination may get different documents (say, with
or without key images) and two different documents must never share a UID.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid

# Changing this string changes every UID we have ever sent: only with a migration plan.
_NAMESPACE = "pacs-triage-result-documents-v1"


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[_NAMESPACE, *map(str, parts)]))


@dataclass(frozen=True)
class ResultUids:
    """Series and instance UIDs of one prediction's documents for one kind of destination."""

    sr_series: str
    sr_instance: str
    sc_series: str
    kos_series: str
    kos_instance: str
    key: tuple[str, int, str, str]

    def sc_instance(self, index: int) -> str:
        """SOP Instance UID of the ``index``-th key image (0-based, in series order)."""
        if index < 0:
            raise ValueError(f"index: must be >= 0 (got {index})")
        return _uid(*self.key, "sc-instance", index)


def device_uid(bundle_sha256: str) -> str:
    """The Device Observer UID of a bundle: one per weights hash, the same in every report."""
    return _uid("device", bundle_sha256)


def result_uids(
    study_uid: str, study_version: int, bundle_sha256: str, destination_kind: str
) -> ResultUids:
    """The UIDs of the documents for one prediction and one kind of destination.

    Raises
    ------
    ValueError
        If ``study_version`` is below 1, or ``bundle_sha256`` or ``destination_kind`` is blank.
    """
    if study_version < 1:
        raise ValueError(f"study_version: must be >= 1 (got {study_version})")
    if not bundle_sha256.strip():
        raise ValueError("bundle_sha256: must not be blank")
    if not destination_kind.strip():
        raise ValueError("destination_kind: must not be blank")
    key = (study_uid, study_version, bundle_sha256, destination_kind)
    return ResultUids(
        sr_series=_uid(*key, "sr-series"),
        sr_instance=_uid(*key, "sr-instance"),
        sc_series=_uid(*key, "sc-series"),
        kos_series=_uid(*key, "kos-series"),
        kos_instance=_uid(*key, "kos-instance"),
        key=key,
    )
