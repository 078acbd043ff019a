"""A raw DICOM upper-layer requestor for fuzzing: every byte it sends is ours to choose.

pynetdicom refuses to encode the broken PDUs and command sets a fuzzer needs, and a
pynetdicom association costs tens of milliseconds to set up; this speaks just enough of
PS3.8 (A-ASSOCIATE-RQ/AC, P-DATA-TF, A-RELEASE, A-ABORT) over a plain socket to put any
bytes on the wire in any state, and to read back what the listener answered.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)

from bench.hostile_peers import pdata, pdu_header, store_command

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1161.9"
A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RP, A_ABORT = 0x02, 0x03, 0x04, 0x06, 0x07

CONTEXTS: dict[int, tuple[str, str]] = {
    1: (CTImageStorage, ExplicitVRLittleEndian),
    3: (CTImageStorage, ImplicitVRLittleEndian),
    5: (CTImageStorage, RLELossless),
    7: (CTImageStorage, JPEGLSLossless),
    9: (VERIFICATION, ImplicitVRLittleEndian),
}
"""Presentation contexts every fuzz association proposes: id -> (abstract, transfer syntax)."""


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def associate_rq(called: str = "TRIAGE", calling: str = "FUZZER", max_pdu: int = 131072) -> bytes:
    """A well-formed A-ASSOCIATE-RQ proposing :data:`CONTEXTS` (the seed of PDU fuzzing)."""
    items = [_item(0x10, APPLICATION_CONTEXT.encode())]
    for context_id, (abstract, syntax) in CONTEXTS.items():
        sub = _item(0x30, abstract.encode()) + _item(0x40, syntax.encode())
        items.append(_item(0x20, struct.pack(">BBBB", context_id, 0, 0, 0) + sub))
    user = (
        _item(0x51, struct.pack(">L", max_pdu))
        + _item(0x52, IMPLEMENTATION_UID.encode())
        + _item(0x55, b"FUZZ_0")
    )
    items.append(_item(0x50, user))
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32 + b"".join(items)
    return pdu_header(0x01, len(body)) + body


def echo_command(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ command set (implicit VR little endian)."""

    def element(elem: int, value: bytes) -> bytes:
        return struct.pack("<HHL", 0x0000, elem, len(value)) + value

    uid = VERIFICATION.encode() + b"\0"
    body = (
        element(0x0002, uid)
        + element(0x0100, struct.pack("<H", 0x0030))
        + element(0x0110, struct.pack("<H", message_id))
        + element(0x0800, struct.pack("<H", 0x0101))
    )
    return element(0x0000, struct.pack("<L", len(body))) + body


def ct_store_command(sop_instance_uid: str, message_id: int) -> bytes:
    """A C-STORE-RQ for CT Image Storage of ``sop_instance_uid``."""
    uid = sop_instance_uid.encode()
    return store_command(_even(CTImageStorage.encode()), _even(uid), message_id=message_id & 0xFFFF)


def _even(value: bytes) -> bytes:
    return value + b"\0" if len(value) % 2 else value


def command_status(command: bytes) -> int | None:
    """The Status (0000,0900) of a command set in implicit VR LE, if it holds one."""
    pos = 0
    while pos + 8 <= len(command):
        group, elem, length = struct.unpack_from("<HHL", command, pos)
        pos += 8
        if (group, elem) == (0x0000, 0x0900) and length == 2:
            return int(struct.unpack_from("<H", command, pos)[0])
        pos += length
    return None


@dataclass
class Answer:
    """What the listener sent back for one request."""

    statuses: list[int] = field(default_factory=list)
    aborted: bool = False
    closed: bool = False
    released: bool = False


class RawAssociation:
    """One TCP connection to the listener, driven PDU by PDU."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.accepted: dict[int, str] = {}
        self._buffer = bytearray()
        self._command = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawAssociation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------
    def _fill(self, size: int, deadline: float) -> bool:
        while len(self._buffer) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except OSError:
                chunk = b""
            if not chunk:
                raise ConnectionError("closed by the listener")
            self._buffer += chunk
        return True

    def read_pdu(self, timeout: float) -> tuple[int, bytes] | None:
        """The next whole PDU (type, body); None after ``timeout``; ConnectionError on close."""
        deadline = time.monotonic() + timeout
        if not self._fill(6, deadline):
            return None
        pdu_type, _, length = struct.unpack_from(">BBL", self._buffer)
        if not self._fill(6 + length, deadline):
            return None
        body = bytes(self._buffer[6 : 6 + length])
        del self._buffer[: 6 + length]
        return pdu_type, body

    def closed_within(self, timeout: float) -> bool:
        """Whether the listener closes the connection within ``timeout`` (reading all)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._buffer.clear()
                self._fill(1 << 30, deadline)
        except ConnectionError:
            return True
        return False

    # -- association -----------------------------------------------------------------------
    def associate(self, request: bytes | None = None) -> int | None:
        """Send an A-ASSOCIATE-RQ; the answering PDU type (AC=2, RJ=3, ABORT=7) or None."""
        self.sock.sendall(request if request is not None else associate_rq())
        try:
            pdu = self.read_pdu(self.timeout)
        except ConnectionError:
            return None
        if pdu is None:
            return None
        if pdu[0] == A_ASSOCIATE_AC:
            self.accepted = _accepted_contexts(pdu[1])
        return pdu[0]

    def context_for(self, syntax: str) -> int | None:
        """The accepted CT context id for ``syntax``, if the listener accepted it."""
        for context_id, accepted in self.accepted.items():
            abstract, _ = CONTEXTS[context_id]
            if abstract == CTImageStorage and accepted == syntax:
                return context_id
        return None

    # -- DIMSE -----------------------------------------------------------------------------
    def send(self, data: bytes) -> bool:
        """Write raw bytes; False when the listener has already closed."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def send_message(
        self, context_id: int, command: bytes, dataset: bytes | None, max_pdv: int = 16000
    ) -> bool:
        """A command set and its data set as P-DATA-TF PDUs (data split into PDVs)."""
        if not self.send(pdata(context_id, 0x03, command)):
            return False
        if dataset is None:
            return True
        chunks = [dataset[i : i + max_pdv] for i in range(0, len(dataset), max_pdv)] or [b""]
        for index, chunk in enumerate(chunks):
            last = 0x02 if index == len(chunks) - 1 else 0x00
            if not self.send(pdata(context_id, last, chunk)):
                return False
        return True

    def wait_answer(self, timeout: float, responses: int = 1) -> Answer:
        """Read until ``responses`` DIMSE responses, an abort, a close or ``timeout``."""
        answer = Answer()
        deadline = time.monotonic() + timeout
        while len(answer.statuses) < responses:
            try:
                pdu = self.read_pdu(max(0.0, deadline - time.monotonic()))
            except ConnectionError:
                answer.closed = True
                return answer
            if pdu is None:
                return answer
            pdu_type, body = pdu
            if pdu_type == A_ABORT:
                answer.aborted = True
                return answer
            if pdu_type == A_RELEASE_RP:
                answer.released = True
                return answer
            if pdu_type == P_DATA_TF:
                answer.statuses.extend(self._statuses(body))
        return answer

    def _statuses(self, body: bytes) -> list[int]:
        found: list[int] = []
        pos = 0
        while pos + 6 <= len(body):
            (length,) = struct.unpack_from(">L", body, pos)
            control = body[pos + 5]
            value = body[pos + 6 : pos + 4 + length]
            pos += 4 + length
            if control & 0x01:
                self._command += value
                if control & 0x02:
                    status = command_status(bytes(self._command))
                    self._command.clear()
                    if status is not None:
                        found.append(status)
        return found

    def release(self, timeout: float) -> bool:
        """A-RELEASE-RQ; True when the listener answers A-RELEASE-RP."""
        if not self.send(pdu_header(0x05, 4) + b"\0" * 4):
            return False
        return self.wait_answer(timeout, responses=1 << 30).released

    def end_writes(self) -> None:
        """Half-close: the listener reads end-of-stream and must close its side."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)


def churn_associations(port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    """Open an association and drop it at once (TCP reset), again and again until ``stop``.

    ``counts`` gains one in ``accepted``, ``rejected``, ``other`` or ``failed`` per try.
    """
    while not stop.is_set():
        try:
            conn = RawAssociation(port, timeout=5)
            answer = conn.associate()
            counts[
                {A_ASSOCIATE_AC: "accepted", A_ASSOCIATE_RJ: "rejected"}.get(answer or 0, "other")
            ] += 1
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        except OSError:
            counts["failed"] += 1


def _accepted_contexts(body: bytes) -> dict[int, str]:
    """Accepted presentation context id -> transfer syntax, from an A-ASSOCIATE-AC body."""
    accepted: dict[int, str] = {}
    pos = 68
    while pos + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, pos)
        value = body[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if item_type != 0x21 or len(value) < 4 or value[2] != 0:
            continue
        sub = value[4:]
        if len(sub) >= 4 and sub[0] == 0x40:
            (sub_length,) = struct.unpack_from(">H", sub, 2)
            accepted[value[0]] = sub[4 : 4 + sub_length].decode("ascii", "replace").rstrip("\0 ")
    return accepted
