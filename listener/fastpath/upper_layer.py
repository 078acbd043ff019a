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
  whenever another thread queues a primitive for sending) instead of sleeping, and hands
  P-DATA-TF presentation data values on as ``memoryview`` slices of that buffer. In the
  data transfer state (Sta6) with nothing else pending, a received P-DATA-TF goes straight
  to the DIMSE provider and a C-STORE response straight to the socket: the same DT-2 and
  DT-1 actions, without the four queue operations, the state machine dispatch and the
  wake-up write that each costs (~40 us per PDU, 1,500 PDUs per CT study).
- :class:`~listener.fastpath.dimse_store.StreamingDIMSE` writes a plain C-STORE's data set to the
  spool's temporary file fragment by fragment as the PDUs arrive (other data sets stay the
  list of their received fragments) and serves the request at once in the DUL thread,
  rather than queueing it for the association thread's next poll.
- Each association copies the ~130 supported presentation contexts cheaply instead of
  with ``deepcopy`` (70 ms per association).

pynetdicom's ``EVT_DATA_RECV``/``EVT_PDU_RECV``/``EVT_FSM_TRANSITION`` notifications are not
raised for P-DATA on this path, nor ``EVT_C_STORE``/``EVT_DIMSE_RECV``/``EVT_DIMSE_SENT``
(or ``EVT_DATA_SENT``/``EVT_PDU_SENT`` for its response) for a plain C-STORE
(nothing in pacs-triage binds them; ``EVT_C_STORE``'s handler and the store function are
the same code, :func:`listener.handlers.store_received`). The subclasses touch private pynetdicom
attributes, so they are used only with the versions in :data:`TESTED_PYNETDICOM`; with any
other version :func:`make_request_handler` returns pynetdicom's stock handler.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
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
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket, RequestHandler

from listener.fastpath.dimse_store import BeginFunction, StoreFunction, StreamingDIMSE
from listener.fastpath.gate import ConnectionGate
from listener.fastpath.limits import ReceiveLimits

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


class BulkSocket(AssociationSocket):
    """An association socket that reads ``n`` bytes into one buffer with ``recv_into``.

    TCP_NODELAY is set so a C-STORE response leaves at once rather than when Nagle's
    algorithm allows (the peer waits for it before sending the next instance).
    """

    def __init__(
        self, assoc: Association, client_socket: socket.socket, read_timeout: float | None = None
    ) -> None:
        super().__init__(assoc, client_socket=client_socket)
        with contextlib.suppress(OSError):
            client_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A read that has begun (the reactor only reads once select() saw data) may wait
        # this long for the rest of its PDU: a peer stalled mid-PDU is timed out, not
        # waited for forever. Accepted sockets are blocking without this.
        client_socket.settimeout(read_timeout)

    def close_connection(self) -> None:
        """Shut the connection down from any thread; its reactor sees the close and ends."""
        sock = self.socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

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

    def __init__(self, assoc: Association, limits: ReceiveLimits) -> None:
        super().__init__(assoc)
        self._limits = limits
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._reactor_thread: int | None = None
        self._readable = False  # select() just found the socket readable
        self._released_acceptor = False

    def _wake(self) -> None:
        # A full pipe means a wake-up is already pending; a closed one, the reactor is done.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        if threading.get_ident() != self._reactor_thread:
            self._wake()  # the reactor itself checks its queue before it waits again

    def _in_data_transfer(self) -> bool:
        """In Sta6 with no event or primitive waiting: DT-1/DT-2 may run directly."""
        return (
            self.state_machine.current_state == "Sta6"
            and not self.event_queue.queue
            and not self.to_provider_queue.queue
            and not self._recv_pdu.queue
        )

    def send_pdata_now(self, context_id: int, value: bytes) -> bool:
        """Send one P-DATA-TF (one PDV, ``value`` including its control header) at once.

        DT-1 without its queue round trip, for the reactor thread in Sta6; False (nothing
        sent) anywhere else, where the caller queues the primitive as usual.
        """
        if threading.get_ident() != self._reactor_thread or not self._in_data_transfer():
            return False
        sock = self.socket
        if sock is None:
            return False
        item_length = len(value) + 1
        header = struct.pack(">BBLLB", _P_DATA_TF, 0, item_length + 4, item_length, context_id)
        sock.send(header + value)
        return True

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
        self._readable = sock is not None and sock in ready
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _is_transport_event(self) -> bool:
        """pynetdicom's check, without polling the socket again right after select() did."""
        if self._readable and self.state_machine.current_state != "Sta13":
            self._readable = False
            self._read_pdu_data()
            return True
        self._readable = False
        return bool(super()._is_transport_event())

    def run_reactor(self) -> None:
        """Same duties as pynetdicom's reactor; waits in select() when there is nothing to do."""
        self._idle_timer.start()
        self._reactor_thread = threading.get_ident()
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
                if not self.event_queue.queue:  # only this thread takes from it: no lock
                    if not self.to_provider_queue.queue:
                        self._wait_for_work()
                    continue
                self.state_machine.do_action(self.event_queue.get(block=False))
                self._release_acceptor_if_gone()
        finally:
            discard_pending = getattr(self.assoc.dimse, "discard_pending", None)
            if discard_pending is not None:
                with contextlib.suppress(Exception):
                    discard_pending()  # an instance cut off mid-transfer leaves no temp file
            activity = getattr(self.assoc, "_activity", None)
            if activity is not None:
                activity.set()  # the association notices the DUL has stopped
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def _release_acceptor_if_gone(self) -> None:
        """Wake the association thread when the connection ends before any request came.

        pynetdicom's acceptor waits for the A-ASSOCIATE-RQ for the whole ACSE timeout even
        when the connection is already gone (an evicted or timed-out pending connection);
        ``None`` on its queue ends that wait at once, and with it the thread.
        """
        assoc = self.assoc
        if (
            self.state_machine.current_state == "Sta1"
            and not self._released_acceptor
            and assoc.is_acceptor
            and not assoc.is_established
            and assoc.requestor.primitive is None
        ):
            self._released_acceptor = True
            self.to_user_queue.put(None)  # type: ignore[arg-type]

    def _abort_hard(self, reason: int = 0x00) -> None:
        """Send one A-ABORT (source: service provider) and close, whatever the state."""
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = reason
        sock = self.socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.send(abort.encode())
            if isinstance(sock, BulkSocket):
                sock.close_connection()
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
            # One abort and close: parsing on would answer every 6 bytes of garbage.
            log.error("unknown PDU type 0x%02X received: aborting the connection", pdu_type)
            self._abort_hard(reason=0x01)  # unrecognized PDU
            return
        if length > self._limits.max_body(pdu_type):
            log.error(
                "PDU type 0x%02X declares %d bytes, over the %d accepted: aborting",
                pdu_type,
                length,
                self._limits.max_body(pdu_type),
            )
            self._abort_hard(reason=0x06)  # invalid PDU parameter value
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
            log.error("unable to decode a received PDU of type 0x%02X: aborting", pdu_type)
            self._abort_hard(reason=0x02)  # unexpected / malformed PDU
            return
        if event == "Evt10" and self._in_data_transfer():  # DT-2, Sta6 -> Sta6, directly
            self.assoc.dimse.receive_primitive(pdu.to_primitive())
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)


class SlotLimitedACSE(ACSE):
    """ACSE that gives an association a slot only once its request is answered.

    pynetdicom's own check counts every connection thread, pending ones included; with
    :class:`~listener.fastpath.gate.ConnectionGate` the slots hold associations only.
    A request that finds every slot taken is rejected (transient, local limit exceeded)
    as pynetdicom would reject it.
    """

    def __init__(self, assoc: StreamingAssociation) -> None:
        super().__init__(assoc)
        self._streaming = assoc

    def negotiate_association(self) -> None:
        assoc = self._streaming
        assoc.gate.leave_pending(id(assoc))
        if not assoc.gate.take_slot():
            log.warning(
                "association from %s rejected: all %d association slots in use",
                assoc.requestor.address,
                assoc.gate.max_associations,
            )
            self.send_reject(0x02, 0x03, 0x02)  # transient, presentation, local limit
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        assoc.holds_slot = True
        super().negotiate_association()
        if assoc.is_established:
            sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(assoc.limits.network_timeout)
        else:
            assoc.release_slot()


class StreamingAssociation(Association):
    """An acceptor association using :class:`EventDrivenDUL` and :class:`StreamingDIMSE`."""

    def __init__(
        self,
        ae: Any,
        mode: str,
        store: StoreFunction | None = None,
        begin: BeginFunction | None = None,
        *,
        limits: ReceiveLimits | None = None,
        gate: ConnectionGate | None = None,
    ) -> None:
        super().__init__(ae, mode)
        self.limits = limits if limits is not None else ReceiveLimits()
        self.gate = gate or ConnectionGate(
            self.limits.max_associations, self.limits.max_pending_connections
        )
        self.holds_slot = False
        self._slot_lock = threading.Lock()
        self._activity = threading.Event()
        self.acse = SlotLimitedACSE(self)
        self.dul = EventDrivenDUL(self, self.limits)
        self.dimse = StreamingDIMSE(self, store, begin, self.limits)
        self.dul.to_user_queue = _NotifyingQueue(self._activity)
        self.dimse.msg_queue = _NotifyingQueue(self._activity)
        self.network_timeout = self.network_timeout  # re-apply to the new DUL's idle timer
        # The wait for the A-ASSOCIATE-RQ (ARTIM and the acceptor's wait) is short: a real
        # peer sends its request at once; anything slower is idle or hostile.
        self.acse_timeout = self.limits.association_request_timeout

    def release_slot(self) -> None:
        """Give the association slot back (once)."""
        with self._slot_lock:
            if self.holds_slot:
                self.holds_slot = False
                self.gate.free_slot()

    def run_reactor(self) -> None:
        """pynetdicom's acceptor life, then the pending place or the slot given back."""
        try:
            super().run_reactor()
        finally:
            self.gate.leave_pending(id(self))
            self.release_slot()

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop, woken by its queues instead of polling every 1 ms.

        Same checks in the same order as pynetdicom 3.0's: a queued DIMSE request, a
        release request, an abort, a dead DUL, the network timeout. The 1 ms poll alone
        cost ~0.25 s of CPU per 300-instance association on a busy 2-core host.
        """
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            self._activity.clear()
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                continue
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                log.debug("association released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires, as pynetdicom does
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                log.error("network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return
            self._activity.wait(_IDLE_WAIT)


class _NotifyingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue that sets an event whenever something is put on it."""

    def __init__(self, activity: threading.Event) -> None:
        super().__init__()
        self._activity = activity

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._activity.set()


class StreamingRequestHandler(RequestHandler):
    """Creates a :class:`StreamingAssociation` over a :class:`BulkSocket` for each connection."""

    store: StoreFunction | None = None
    begin: BeginFunction | None = None
    limits: ReceiveLimits = ReceiveLimits()
    gate: ConnectionGate | None = None

    def _create_association(self) -> Association:
        cls = type(self)
        assoc = StreamingAssociation(
            self.ae, "acceptor", cls.store, cls.begin, limits=cls.limits, gate=cls.gate
        )
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        bulk = BulkSocket(
            assoc, client_socket=self.request, read_timeout=cls.limits.association_request_timeout
        )
        assoc.set_socket(bulk)
        assoc.gate.admit(id(assoc), bulk.close_connection)
        acceptor = assoc.acceptor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = _copy_contexts(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event, bound in self.server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in cast(list[tuple[Any, Any]], bound):
                    assoc.bind(event, handler, args)
        return assoc


def _copy_contexts(contexts: Sequence[PresentationContext]) -> list[PresentationContext]:
    """Independent copies of the supported contexts, as pynetdicom's ``deepcopy`` makes.

    ``deepcopy`` re-validates every UID of ~130 contexts x 13 transfer syntaxes, ~70 ms
    per association; a context's only mutable part is its transfer syntax list (UIDs are
    immutable strings), so a shallow copy with its own list is as independent.
    """
    copies = []
    for context in contexts:
        duplicate = copy.copy(context)
        duplicate._transfer_syntax = list(context._transfer_syntax)
        copies.append(duplicate)
    return copies


def make_request_handler(
    store: StoreFunction | None = None,
    begin: BeginFunction | None = None,
    limits: ReceiveLimits | None = None,
) -> type[RequestHandler]:
    """Our streaming request handler, or pynetdicom's own on an untested pynetdicom version.

    ``store`` serves plain C-STORE requests directly (see :class:`StreamingDIMSE`); it must
    do what the ``EVT_C_STORE`` handler bound to the server does. ``begin``, if given,
    opens the sink each such request's data set is written to while it arrives.
    ``limits`` bounds every connection (:mod:`listener.fastpath.limits`); the handler
    class carries one :class:`ConnectionGate` shared by all its connections.
    """
    if pynetdicom.__version__ in TESTED_PYNETDICOM:
        bounds = limits if limits is not None else ReceiveLimits()
        return type(
            "BoundStreamingRequestHandler",
            (StreamingRequestHandler,),
            {
                "store": store,
                "begin": begin,
                "limits": bounds,
                "gate": ConnectionGate(bounds.max_associations, bounds.max_pending_connections),
            },
        )
    log.warning(
        "pynetdicom %s is not one the streaming receive path was tested with (%s); "
        "using pynetdicom's stock receive path",
        pynetdicom.__version__,
        ", ".join(TESTED_PYNETDICOM),
    )
    return RequestHandler
