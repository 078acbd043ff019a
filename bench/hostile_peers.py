"""Raw-socket peers that misbehave on purpose, for ``bench/hostile`` and the hostile-peer tests.

Each speaks just enough DICOM upper layer (PS3.8) to reach the state an attack needs: a
bare TCP connection, a partial PDU header, or an accepted association (made by a real
pynetdicom requestor, whose socket is then written to directly).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

A_ABORT = 0x07


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A plain TCP connection to the listener on loopback."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def pdu_header(pdu_type: int, length: int) -> bytes:
    """The 6-byte header of a PDU declaring ``length`` bytes of body."""
    return struct.pack(">BBL", pdu_type, 0, length)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the listener sends until it closes (True) or ``timeout`` passes (False)."""
    sock.settimeout(0.2)
    received = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return bytes(received), True
        if not chunk:
            return bytes(received), True
        received += chunk
    return bytes(received), False


def abort_pdus(data: bytes) -> int:
    """How many A-ABORT PDUs ``data`` (a stream of whole PDUs) holds."""
    count = 0
    pos = 0
    while pos + 6 <= len(data):
        pdu_type, _, length = struct.unpack_from(">BBL", data, pos)
        count += pdu_type == A_ABORT
        pos += 6 + length
    return count


@contextmanager
def associated(
    port: int, aet: str = "HOSTILE", syntax: str = ExplicitVRLittleEndian
) -> Iterator[Association]:
    """An association accepted by the listener for CT Image Storage in ``syntax``."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(CTImageStorage, [syntax])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    assert assoc.is_established, "the listener did not accept the association"
    # Pause the requestor's own reactor (as pynetdicom does around a service call) so the
    # responses to our hand-written requests stay on its queue for response_status().
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.001)
    try:
        yield assoc
    finally:
        assoc._reactor_checkpoint.set()
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()


def raw_socket(assoc: Association) -> socket.socket:
    """The TCP socket under a pynetdicom association, to write arbitrary bytes on it."""
    assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
    return assoc.dul.socket.socket


def wait_aborted(assoc: Association, timeout: float) -> bool:
    """Whether the listener aborted (or closed) ``assoc`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The requestor's reactor is paused, so look at its upper layer: an A-ABORT
        # received, or the connection gone (state 1, idle).
        if assoc.acse.is_aborted() or assoc.dul.state_machine.current_state == "Sta1":
            return True
        time.sleep(0.02)
    return False


def pdata(context_id: int, control: int, value: bytes) -> bytes:
    """One P-DATA-TF PDU carrying one PDV (``control``: bit 0 command, bit 1 last)."""
    item = struct.pack(">LBB", len(value) + 2, context_id, control) + value
    return pdu_header(0x04, len(item)) + item


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def store_command(
    sop_class: bytes, sop_instance: bytes, message_id: int = 1, with_dataset: bool = True
) -> bytes:
    """A C-STORE-RQ command set (implicit VR LE) with the affected UIDs exactly as given."""

    def us(value: int) -> bytes:
        return struct.pack("<H", value)

    body = b"".join(
        (
            _element(0x0002, sop_class),
            _element(0x0100, us(0x0001)),
            _element(0x0110, us(message_id)),
            _element(0x0700, us(0)),
            _element(0x0800, us(0x0000 if with_dataset else 0x0101)),
            _element(0x1000, sop_instance),
        )
    )
    return _element(0x0000, struct.pack("<L", len(body))) + body


def store_raw(assoc: Association, sop_instance: str, dataset: bytes) -> int | None:
    """Send one C-STORE of exactly these data set bytes; the listener's answer status."""
    context_id = assoc.accepted_contexts[0].context_id
    assert context_id is not None
    command = store_command(CTImageStorage.encode() + b"\x00", _even(sop_instance.encode()))
    sock = raw_socket(assoc)
    sock.sendall(pdata(context_id, 0x03, command))
    sock.sendall(pdata(context_id, 0x02, dataset))
    return response_status(assoc)


def _even(value: bytes) -> bytes:
    return value + b"\x00" if len(value) % 2 else value


def response_status(assoc: Association, timeout: float = 10.0) -> int | None:
    """The status of the next DIMSE response the listener sends on ``assoc``, if any."""
    assoc.dimse_timeout = timeout
    _, message = assoc.dimse.get_msg(block=True)
    if message is None:
        return None
    return int(message.Status)
