"""An event-driven DICOM upper layer for the C-STORE SCP: no polling sleeps, one copy per byte.

Why this exists: pynetdicom 3.0's acceptor spends most of a CT study's receive time outside
our code. Profiling ``storescu`` sending 300 slices of 512x512 (158 MB) showed its DUL
thread asleep in ``time.sleep(0.001)`` polls and the association thread doing the same
before each message, so every C-STORE waits a few milliseconds for nothing; the socket is
read 4 KiB at a time (38,000 ``recv`` calls per study); and each PDU is copied about six
times (``bytearray`` growth, ``bytes()``, PDV slicing, ``data[1:]``, ``BytesIO``,
``getvalue()``) before a handler sees it.

What changes, in narrow subclasses of pynetdicom's own classes (everything else, the state
machine, ACSE, C-ECHO, release and abort handling, is pynetdicom's):

- :class:`BulkSocket` reads a whole PDU with ``recv_into`` into one buffer.
- :class:`EventDrivenDUL` waits in ``select()`` on the socket and a wake-up pipe (written
  whenever a primitive is queued for sending) instead of sleeping, and hands P-DATA-TF
  presentation data values on as ``memoryview`` slices of that buffer.
- :class:`StreamingDIMSE` keeps a data set as the list of its received fragments
  (:class:`ReceivedDataset`, still a ``BytesIO`` for anyone who reads it) and serves a
  complete C-STORE request at once in the DUL thread rather than queueing it for the
  association thread's next poll. The handler then writes the fragments with ``writev``.

pynetdicom's ``EVT_DATA_RECV``/``EVT_PDU_RECV`` notifications are not raised for P-DATA on
this path (nothing in pacs-triage binds them). The subclasses touch private pynetdicom
attributes, so they are used only with the versions in :data:`TESTED_PYNETDICOM`; with any
other version :func:`make_request_handler` returns pynetdicom's stock handler.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import ssl
import struct
from collections.abc import Sequence
from copy import deepcopy
from datetime import datetime
from io import BytesIO
from typing import Any, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_CANCEL, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
)
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler

log = logging.getLogger(__name__)

TESTED_PYNETDICOM = ("3.0.4",)
_P_DATA_TF = 0x04
_OTHER_PDUS = {
    0x01: (A_ASSOCIATE_RQ, "Evt6"),
    0x02: (A_ASSOCIATE_AC, "Evt3"),
    0x03: (A_ASSOCIATE_RJ, "Evt4"),
    0x05: (A_RELEASE_RQ, "Evt12"),
    0x06: (A_RELEASE_RP, "Evt13"),
    0x07: (A_ABORT_RQ, "Evt16"),
}
_IDLE_WAIT = 0.02  # seconds between timer checks while nothing happens


class ReceivedDataset(BytesIO):
    """A received data set kept as the fragments it arrived in (no joining copy).

    ``fragments`` is what the C-STORE handler writes out. Anything that reads it as a
    ``BytesIO`` (``event.dataset``, ``event.encoded_dataset()``) gets the joined bytes,
    built on first such use.
    """

    def __init__(self, fragments: Sequence[memoryview]) -> None:
        super().__init__()
        self.fragments = list(fragments)
        self.nbytes = sum(len(f) for f in self.fragments)
        self._joined = False

    def _join(self) -> None:
        if not self._joined:
            self._joined = True
            super().write(b"".join(self.fragments))
            super().seek(0)

    def getvalue(self) -> bytes:
        self._join()
        return super().getvalue()

    def getbuffer(self) -> memoryview:
        self._join()
        return super().getbuffer()

    def read(self, size: int | None = -1) -> bytes:
        self._join()
        return super().read(size)

    def read1(self, size: int | None = -1) -> bytes:
        self._join()
        return super().read1(size)

    def readinto(self, buffer: Any) -> int:
        self._join()
        return super().readinto(buffer)

    def seek(self, pos: int, whence: int = 0) -> int:
        self._join()
        return super().seek(pos, whence)

    def tell(self) -> int:
        self._join()
        return super().tell()


class BulkSocket(AssociationSocket):
    """An association socket that reads ``n`` bytes into one buffer with ``recv_into``."""

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        got = 0
        while got < nr_bytes:
            n = sock.recv_into(view[got:])
            if not n:  # connection closed: return what arrived, as pynetdicom does
                del view
                del buffer[got:]
                return buffer
            got += n
        return buffer


class _ReceivedPData:
    """Stands in for a decoded P-DATA-TF PDU on the DUL's PDU queue (fsm calls to_primitive)."""

    __slots__ = ("_primitive",)

    def __init__(self, items: list[tuple[int, memoryview]]) -> None:
        primitive = P_DATA()
        # Set the list directly: the property setter accepts only bytes, and the point is
        # to pass views of the PDU buffer on without copying them.
        primitive._presentation_data_value_list = items  # type: ignore[assignment]
        self._primitive = primitive

    def to_primitive(self) -> P_DATA:
        return self._primitive


def _split_pdvs(body: memoryview) -> list[tuple[int, memoryview]]:
    """Presentation data value items of a P-DATA-TF body: (context id, header byte + data)."""
    items = []
    offset = 0
    end = len(body)
    while offset < end:
        if end - offset < 6:
            raise ValueError("truncated presentation data value item")
        (length,) = struct.unpack_from(">L", body, offset)
        if length < 2 or offset + 4 + length > end:
            raise ValueError(f"presentation data value item length {length} is invalid")
        items.append((body[offset + 4], body[offset + 5 : offset + 4 + length]))
        offset += 4 + length
    return items


class EventDrivenDUL(DULServiceProvider):
    """The DUL provider, waiting on the socket and a wake-up pipe instead of polling."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def _wake(self) -> None:
        # A full pipe means a wake-up is already pending; a closed one, the reactor is done.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def _wait_for_work(self) -> None:
        sock = self.socket.socket if self.socket is not None else None
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return
        watched: list[Any] = [self._wake_r]
        if sock is not None and sock.fileno() >= 0:
            watched.append(sock)
        try:
            ready, _, _ = select.select(watched, [], [], _IDLE_WAIT)
        except (OSError, ValueError):
            return  # socket closed under us: the next loop notices
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def run_reactor(self) -> None:
        """Same duties as pynetdicom's reactor; waits in select() when there is nothing to do."""
        self._idle_timer.start()
        try:
            while True:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:
                    log.exception("exception in the DUL reactor, aborting the association")
                    self._abort_hard()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    self._wait_for_work()
                    continue
                self.state_machine.do_action(event)
        finally:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def _abort_hard(self) -> None:
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(abort.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True

    def _read_pdu_data(self) -> None:
        """Read one PDU; P-DATA-TF values stay views of the one buffer they were read into."""
        sock = cast(AssociationSocket, self.socket)
        try:
            header = sock.recv(6)
        except (OSError, TimeoutError):
            log.error("connection closed before the entire PDU was received")
            self.event_queue.put("Evt17")
            return
        if len(header) != 6:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type != _P_DATA_TF and pdu_type not in _OTHER_PDUS:
            log.error("unknown PDU type 0x%02X received", pdu_type)
            self.event_queue.put("Evt19")
            return
        try:
            body = sock.recv(length)
        except (OSError, TimeoutError):
            log.error("connection closed before the entire PDU was received")
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            log.error("received PDU is shorter than announced (%d of %d)", len(body), length)
            self.event_queue.put("Evt17")
            return
        try:
            if pdu_type == _P_DATA_TF:
                pdu: Any = _ReceivedPData(_split_pdvs(memoryview(body)))
                event = "Evt10"
            else:
                pdu_cls, event = _OTHER_PDUS[pdu_type]
                raw = bytes(header) + bytes(body)
                evt.trigger(self.assoc, evt.EVT_DATA_RECV, {"data": raw})
                pdu = pdu_cls()
                pdu.decode(raw)
                evt.trigger(self.assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
        except Exception:
            log.exception("unable to decode the received PDU")
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)


def _command_pdata(context_id: int, fragment: memoryview) -> P_DATA:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, bytes(fragment)]]
    return primitive


class StreamingDIMSE(DIMSEServiceProvider):
    """DIMSE provider that keeps data sets as fragments and serves C-STORE without queueing."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._fragments: list[memoryview] = []

    def receive_primitive(self, primitive: P_DATA) -> None:
        for context_id, data in primitive.presentation_data_value_list:
            control = data[0]
            if self.message is None:
                self.message = DIMSEMessage()
                self._fragments = []
            if control & 1:  # command set fragment (decoded by pynetdicom, it is small)
                if self.message.decode_msg(_command_pdata(context_id, data), self.assoc):
                    self._deliver()
            else:  # data set fragment
                self._fragments.append(data[1:])
                if control & 2:
                    self._deliver()

    def _deliver(self) -> None:
        message = cast(DIMSEMessage, self.message)
        self.message = None
        message.data_set = ReceivedDataset(self._fragments)
        self._fragments = []
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": message})
        context_id = cast(int, message.context_id)
        try:
            request = message.message_to_primitive()
        except Exception:
            log.exception("received an invalid DIMSE message")
            self.dul.event_queue.put("Evt19")
            return
        if isinstance(request, C_CANCEL):
            if len(self.cancel_req) < 10:
                self.cancel_req[cast(int, request.MessageIDBeingRespondedTo)] = request
            return
        if (
            isinstance(request, C_STORE)
            and self.assoc.is_acceptor
            and request.MessageIDBeingRespondedTo is None
            and context_id in self.assoc._accepted_cx
        ):
            # Serve now, in this thread: the peer waits for the response before it sends
            # more, so nothing is lost by not reading meanwhile.
            self.assoc._serve_request(request, context_id)
            return
        self.msg_queue.put((context_id, request))  # type: ignore[arg-type]

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send a plain C-STORE response encoded directly; anything else through pynetdicom.

        pynetdicom builds every command through a pydicom ``Dataset`` (about 0.4 ms); a
        C-STORE-RSP without error comment or offending elements is seven fixed elements.
        ``EVT_DIMSE_SENT`` is not raised for these responses.
        """
        encoded = _plain_store_response(primitive)
        if encoded is None:
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list = [[context_id, b"\x03" + encoded]]
        self.dul.send_pdu(pdata)


def _implicit(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def _uid_value(uid: object) -> bytes | None:
    text = str(uid)
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _plain_store_response(primitive: Any) -> bytes | None:
    """The command set of a C-STORE-RSP (Implicit VR Little Endian), or None if not plain."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    if (
        primitive.Status is None
        or primitive.AffectedSOPClassUID is None
        or primitive.AffectedSOPInstanceUID is None
        or any(
            getattr(primitive, name, None) is not None
            for name in ("ErrorComment", "OffendingElement", "ErrorID")
        )
    ):
        return None
    class_uid = _uid_value(primitive.AffectedSOPClassUID)
    instance_uid = _uid_value(primitive.AffectedSOPInstanceUID)
    if class_uid is None or instance_uid is None:
        return None
    body = b"".join(
        (
            _implicit(0x0002, class_uid),
            _implicit(0x0100, struct.pack("<H", 0x8001)),
            _implicit(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)),
            _implicit(0x0800, struct.pack("<H", 0x0101)),
            _implicit(0x0900, struct.pack("<H", primitive.Status)),
            _implicit(0x1000, instance_uid),
        )
    )
    return _implicit(0x0000, struct.pack("<L", len(body))) + body


class StreamingAssociation(Association):
    """An acceptor association using :class:`EventDrivenDUL` and :class:`StreamingDIMSE`."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self.dul = EventDrivenDUL(self)
        self.dimse = StreamingDIMSE(self)
        self.network_timeout = self.network_timeout  # re-apply to the new DUL's idle timer


class StreamingRequestHandler(RequestHandler):
    """Creates a :class:`StreamingAssociation` over a :class:`BulkSocket` for each connection."""

    def _create_association(self) -> Association:
        assoc = StreamingAssociation(self.ae, "acceptor")
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(BulkSocket(assoc, client_socket=self.request))
        acceptor = assoc.acceptor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event, bound in self.server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in bound:
                    assoc.bind(event, handler, args)
        return assoc


def make_request_handler() -> type[RequestHandler]:
    """Our streaming request handler, or pynetdicom's own on an untested pynetdicom version."""
    if pynetdicom.__version__ in TESTED_PYNETDICOM:
        return StreamingRequestHandler
    log.warning(
        "pynetdicom %s is not one the streaming receive path was tested with (%s); "
        "using pynetdicom's stock receive path",
        pynetdicom.__version__,
        ", ".join(TESTED_PYNETDICOM),
    )
    return RequestHandler
