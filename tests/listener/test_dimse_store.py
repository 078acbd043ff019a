"""The fast path's hand-encoded C-STORE-RSP is byte for byte what pynetdicom encodes.

:mod:`listener.fastpath.dimse_store` writes a plain C-STORE response's command set itself
instead of through pynetdicom's ``C_STORE_RSP`` message (a pydicom ``Dataset`` per
response). A peer must not be able to tell: the presentation data value the fast path
sends (control header ``0x03``, last fragment of a command set, then the command) must
equal the one pynetdicom's own encoder puts in its P-DATA-TF for the same primitive.
"""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from listener.fastpath.dimse_store import _store_response

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"  # 25 characters: padded with a NUL
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"  # 27
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"  # 25
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # 25
INSTANCES = [
    "1.2.3.4",  # 7: odd
    "1.2.3.45",  # 8: even
    "1.2.826.0.1.3680043.8.498.11111111111111111111111111111111111111",  # 64
    "1.2.826.0.1.3680043.8.498.1111111111111111111111111111111111111",  # 63
]
STATUSES = [0x0000, 0xA700, 0xA900, 0xC210, 0xB000, 0xC211]
CONTEXT_ID = 3


def pynetdicom_response_pdv(class_uid: str, message_id: int, status: int, instance: str) -> bytes:
    """The presentation data value pynetdicom sends for this C-STORE response."""
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = class_uid
    primitive.AffectedSOPInstanceUID = instance
    primitive.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    pdatas = list(message.encode_msg(CONTEXT_ID, 16384))
    assert len(pdatas) == 1  # a command set alone, in one fragment
    [(context_id, value)] = pdatas[0].presentation_data_value_list
    assert context_id == CONTEXT_ID
    return bytes(value)


@pytest.mark.parametrize("status", STATUSES, ids=[f"0x{s:04X}" for s in STATUSES])
@pytest.mark.parametrize("instance", INSTANCES, ids=[f"uid{len(u)}" for u in INSTANCES])
@pytest.mark.parametrize("class_uid", [CT_IMAGE, ENHANCED_CT, MR_IMAGE, SECONDARY_CAPTURE])
def test_store_response_equals_pynetdicoms_encoding(
    class_uid: str, instance: str, status: int
) -> None:
    expected = pynetdicom_response_pdv(class_uid, 1, status, instance)

    encoded = _store_response(class_uid, 1, status, instance)

    assert encoded is not None
    assert b"\x03" + encoded == expected


@pytest.mark.parametrize("message_id", [0, 1, 255, 256, 0x7FFF, 0xFFFF])
def test_every_message_id_is_encoded_as_pynetdicom_does(message_id: int) -> None:
    expected = pynetdicom_response_pdv(CT_IMAGE, message_id, 0x0000, "1.2.3.4")

    encoded = _store_response(CT_IMAGE, message_id, 0x0000, "1.2.3.4")

    assert encoded is not None and b"\x03" + encoded == expected


def test_a_non_ascii_uid_is_left_to_pynetdicom() -> None:
    assert _store_response("1.2.\u00e9", 1, 0x0000, "1") is None


@pytest.mark.parametrize(("class_uid", "instance"), [("", "1.2.3"), (CT_IMAGE, "")])
def test_a_blank_affected_uid_is_answered_with_an_empty_element(
    class_uid: str, instance: str
) -> None:
    """A request with a blank affected UID still gets its one answer (issue #13, finding 8):
    the response echoes the blank value as a zero-length element."""
    encoded = _store_response(class_uid, 1, 0xC210, instance)
    assert encoded is not None
    empty_element = (0x0002 if not class_uid else 0x1000).to_bytes(2, "little")
    assert b"\x00\x00" + empty_element + b"\x00\x00\x00\x00" in encoded
    assert int.from_bytes(encoded[8:12], "little") == len(encoded) - 12  # group length
