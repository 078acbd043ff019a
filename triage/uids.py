"""DICOM UID validation: the only gate between a UID and a file-system path (listener and worker)."""

from __future__ import annotations

import re

# PS3.5 §9.1: components of digits separated by '.', no leading zero in a multi-digit
# component, at most 64 characters in all.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


class InvalidUIDError(ValueError):
    """A value that must be a DICOM UID is not one; it must never reach a path."""


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a syntactically valid DICOM UID (and so safe in a path)."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def require_uid(value: object, what: str) -> str:
    """Return ``value`` if it is a valid UID, else raise :class:`InvalidUIDError` naming ``what``."""
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise InvalidUIDError(f"{what} is not a valid DICOM UID: {shown}")
    return str(value)
