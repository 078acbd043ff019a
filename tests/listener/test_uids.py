"""UID validation: the gate between a received UID and a path in the spool."""

from __future__ import annotations

import pytest

from triage.uids import InvalidUIDError, is_valid_uid, require_uid


@pytest.mark.parametrize(
    "value",
    ["1.2", "1.2.840.10008.5.1.4.1.1.2", "0.0", "2.25.0", "1." + "2" * 62],
)
def test_valid_uids_pass(value: str) -> None:
    assert is_valid_uid(value)
    assert require_uid(value, "StudyInstanceUID") == value


@pytest.mark.parametrize(
    "value",
    [
        "../../etc/passwd",
        "1.2.3/../../x",
        "1.2.3\\..\\x",
        "..",
        "1.2.3.",
        ".1.2.3",
        "1..2",
        "1.02.3",
        "1",
        "1.2 ",
        "1.2\x00",
        "1.2.3\n",
        "",
        "1." + "2" * 63,
        None,
        12.3,
        b"1.2.3",
    ],
)
def test_invalid_uids_never_pass(value: object) -> None:
    assert not is_valid_uid(value)
    with pytest.raises(InvalidUIDError, match="SOPInstanceUID is not a valid DICOM UID"):
        require_uid(value, "SOPInstanceUID")


def test_invalid_uid_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        require_uid("a.b", "SeriesInstanceUID")
