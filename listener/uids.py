"""Moved to :mod:`triage.uids` (the worker names its result files by UID too).

Kept as a re-export only so branches written against the old path still import; new code
imports ``triage.uids``.
"""

from triage.uids import InvalidUIDError, is_valid_uid, require_uid

__all__ = ["InvalidUIDError", "is_valid_uid", "require_uid"]
