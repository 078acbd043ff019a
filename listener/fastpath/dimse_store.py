"""DIMSE for the C-STORE SCP: data sets kept as received fragments, plain C-STOREs served directly.

Part of the streaming receive path described in :mod:`listener.fastpath.upper_layer`. pynetdicom
decodes every command set into a pydicom ``Dataset``, turns it into a request primitive
(validating each UID with a regular expression), looks up a service class, raises
``EVT_C_STORE`` and encodes the response through another ``Dataset``: about 1 ms per
instance, a quarter of what DCMTK's storescp spends on the whole instance. A plain C-STORE
request and its response are a handful of fixed elements, parsed and written here; the
data set stays the list of fragments it arrived in (:class:`ReceivedDataset`), or, with a
``begin`` function, goes to an :class:`InstanceSink` (the spool's temporary file) fragment
by fragment while the rest of the instance is still arriving.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Protocol, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_CANCEL, C_STORE
from pynetdicom.pdu_primitives import P_DATA

from listener.fastpath.limits import (
    FRAGMENT_OVERHEAD,
    MAX_COMMAND_BYTES,
    MAX_IN_MEMORY_DATASET,
    ReceiveLimits,
)

log = logging.getLogger(__name__)


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


HEAD_BYTES = 64 * 1024
"""How much of a streamed data set is kept in memory: where its grouping tags are looked for."""
_TAIL_BYTES = 64  # of a streamed data set, kept to tell whether its Pixel Data ended


class InstanceSink(Protocol):
    """Where a plain C-STORE's data set is written while it arrives."""

    def write(self, parts: Sequence[bytes | memoryview]) -> None:
        """Append ``parts``; must not raise (a failure is reported when the instance is stored)."""

    def contents(self) -> bytes:
        """Everything written so far."""

    def discard(self) -> None:
        """Drop what was written (the instance will not be stored)."""


@dataclass(frozen=True)
class ReceivedInstance:
    """One C-STORE request as received: who sent it, what it claims to be, and its bytes.

    Without a ``sink``, ``fragments`` is the whole data set. With one, the sink holds the
    whole data set (after whatever ``begin`` wrote first), ``fragments`` only its first
    :data:`HEAD_BYTES` or more, ``size`` its length and ``tail`` its last bytes.
    """

    calling_aet: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    fragments: list[memoryview]
    sink: InstanceSink | None = None
    size: int = -1
    tail: bytes = b""
    abstract_syntax: str = ""
    """The SOP class the presentation context was accepted for ("" = not known)."""
    refused: str | None = None
    """Why the receive path already refused this instance (its bytes were dropped)."""
    association: int | None = None
    """``id()`` of the association that carried it: the assembler holds a study's early
    completion while one of its associations is open."""


StoreFunction = Callable[[ReceivedInstance], int]
"""Stores a received instance and returns the DIMSE status to answer with."""

BeginFunction = Callable[[str, str, str, str], InstanceSink]
"""Opens the sink for an arriving instance: (calling AE, SOP class, SOP instance, syntax)."""


@dataclass(frozen=True)
class _StoreRequest:
    context_id: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    valid_uids: bool = True
    """False when an affected UID is blank or not ASCII: kept in memory, then refused."""


def _command_pdata(context_id: int, fragment: memoryview) -> P_DATA:
    primitive = P_DATA()
    # pynetdicom's setter takes [id, bytes] lists (its annotation says tuples)
    primitive.presentation_data_value_list = [[context_id, bytes(fragment)]]  # type: ignore[list-item]
    return primitive


class StreamingDIMSE(DIMSEServiceProvider):
    """DIMSE provider that keeps data sets as fragments and serves C-STORE without queueing.

    With a ``store`` function, a plain C-STORE request (the command parsed here, seven
    fixed elements) skips pynetdicom's command decoding, request primitive, service class
    and event: ``store`` gets the instance and its status goes straight back as the
    response. Every other message, or a C-STORE on a context not accepted, takes
    pynetdicom's own path.
    """

    def __init__(
        self,
        assoc: Association,
        store: StoreFunction | None = None,
        begin: BeginFunction | None = None,
        limits: ReceiveLimits | None = None,
    ) -> None:
        super().__init__(assoc)
        self._store = store
        self._begin = begin
        self._limits = limits if limits is not None else ReceiveLimits()
        self._command: list[tuple[int, bytes]] = []
        self._command_cost = 0
        self._fragments: list[memoryview] = []
        self._kept_cost = 0  # bytes charged for self._fragments (limits.FRAGMENT_OVERHEAD)
        self._fast: _StoreRequest | None = None
        self._sink: InstanceSink | None = None
        self._size = 0
        self._head_size = 0
        self._tail = b""
        self._refused: str | None = None

    def _abort(self, why: str) -> None:
        """A peer broke a bound or the protocol: one A-ABORT, close, drop what it sent."""
        log.error("aborting the association: %s", why)
        self.discard_pending()
        abort_hard = getattr(self.dul, "_abort_hard", None)
        if abort_hard is not None:
            abort_hard()
        else:
            self.dul.event_queue.put("Evt19")

    def receive_primitive(self, primitive: P_DATA) -> None:
        for context_id, data in primitive.presentation_data_value_list:
            control = data[0]
            if control & 1:  # command set fragment
                self._command_cost += len(data) + FRAGMENT_OVERHEAD
                if self._command_cost > MAX_COMMAND_BYTES:
                    self._abort(f"command set over {MAX_COMMAND_BYTES} bytes")
                    return
                self._command.append((context_id, bytes(data)))
                if control & 2:
                    self._command_complete(context_id)
                continue
            if self._fast is None and self.message is None:
                self._abort("data set fragment without a command")
                return
            fragment = cast(memoryview, data[1:])
            if self._sink is not None or self._refused is not None:
                self._size += len(fragment)
                self._tail = (self._tail + bytes(fragment[-_TAIL_BYTES:]))[-_TAIL_BYTES:]
                if self._refused is None and self._size > self._limits.max_instance_bytes:
                    self._refuse_oversize()
                if self._sink is not None:
                    self._sink.write((fragment,))
                    if self._head_size < HEAD_BYTES:
                        self._fragments.append(fragment)
                        self._head_size += len(fragment)
            else:
                self._kept_cost += len(fragment) + FRAGMENT_OVERHEAD
                if self._kept_cost > MAX_IN_MEMORY_DATASET:
                    if self._fast is None:
                        self._abort(f"data set over {MAX_IN_MEMORY_DATASET} bytes in memory")
                        return
                    self._size = self._kept_cost
                    self._refuse_oversize()
                else:
                    self._fragments.append(fragment)
            if control & 2:
                if self._fast is not None:
                    request, self._fast = self._fast, None
                    fragments, self._fragments = self._fragments, []
                    self._serve_store(request, fragments)
                else:
                    self._deliver()

    def _refuse_oversize(self) -> None:
        """Stop keeping an instance past its size bound; it will be answered with a refusal."""
        limit = self._limits.max_instance_bytes if self._sink is not None else MAX_IN_MEMORY_DATASET
        self._refused = f"data set larger than {limit} bytes: dropped while it arrived"
        self._fragments = []
        self._kept_cost = 0
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.discard()

    def discard_pending(self) -> None:
        """Drop an instance whose data set stopped arriving (association ended)."""
        self._fast = None
        self._fragments = []
        self._kept_cost = 0
        self._command = []
        self._command_cost = 0
        self._refused = None
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.discard()

    def _command_complete(self, context_id: int) -> None:
        command_fragments = self._command
        command = b"".join(fragment[1:] for _, fragment in command_fragments)
        self.discard_pending()
        request = self._plain_store_request(command, context_id)
        if request is not None:
            self._fast = request
            self._size = 0
            self._tail = b""
            if self._begin is not None and request.valid_uids:
                self._open_sink(request)
            return
        self.message = DIMSEMessage()
        done = False
        for cid, fragment in command_fragments:
            done = self.message.decode_msg(_command_pdata(cid, memoryview(fragment)), self.assoc)
        if done:
            self._deliver()

    def _open_sink(self, request: _StoreRequest) -> None:
        assoc = self.assoc
        try:
            self._sink = cast(BeginFunction, self._begin)(
                str(assoc.requestor.ae_title).strip(),
                request.sop_class_uid,
                request.sop_instance_uid,
                str(assoc._accepted_cx[request.context_id].transfer_syntax[0]),
            )
        except Exception:
            log.exception("could not open a sink for an arriving instance; keeping it in memory")
            self._sink = None
        self._size = 0
        self._head_size = 0
        self._tail = b""

    def _plain_store_request(self, command: bytes, context_id: int) -> _StoreRequest | None:
        assoc = self.assoc
        if (
            self._store is None
            or not assoc.is_acceptor
            or assoc._sent_release
            or context_id not in assoc._accepted_cx
        ):
            return None
        fields = _command_fields(command)
        if fields is None or fields.get(0x0100) != 0x0001 or fields.get(0x0800) in (None, 0x0101):
            return None
        message_id = fields.get(0x0110)
        if not isinstance(message_id, int):
            return None
        # A blank, missing or non-ASCII affected UID still gets its one answer: a refusal,
        # after its data set (kept in memory, bounded) has arrived.
        class_uid = str(fields.get(0x0002) or "")
        instance_uid = str(fields.get(0x1000) or "")
        return _StoreRequest(
            context_id,
            message_id,
            class_uid,
            instance_uid,
            valid_uids=bool(class_uid and instance_uid),
        )

    def _serve_store(self, request: _StoreRequest, fragments: list[memoryview]) -> None:
        assoc = self.assoc
        context = assoc._accepted_cx[request.context_id]
        sink, self._sink = self._sink, None
        refused, self._refused = self._refused, None
        received = ReceivedInstance(
            calling_aet=str(assoc.requestor.ae_title).strip(),
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            transfer_syntax=str(context.transfer_syntax[0]),
            fragments=fragments,
            sink=sink,
            size=self._size if sink is not None or refused else -1,
            tail=self._tail,
            abstract_syntax=str(context.abstract_syntax or ""),
            refused=refused,
            association=id(assoc),
        )
        self._kept_cost = 0
        try:
            status = int(cast(StoreFunction, self._store)(received))
        except Exception:
            log.exception("exception in the C-STORE store function")
            status = 0xC211
            if sink is not None:
                sink.discard()
        # Not ``is_established``: the association thread sets that only after the
        # A-ASSOCIATE-AC has gone out, and a fast peer's first C-STORE can be served here
        # before it does; its answer must not be dropped (it once was, 1 in 200 runs).
        if assoc.is_aborted or assoc._kill:
            return
        if not 0 <= status <= 0xFFFF:
            log.error("store function returned an invalid status %r", status)
            status = 0xC211
        encoded = _store_response(
            request.sop_class_uid, request.message_id, status, request.sop_instance_uid
        )
        if encoded is None:  # a UID we cannot encode directly: let pynetdicom do it
            response = C_STORE()
            response.MessageIDBeingRespondedTo = request.message_id
            response.AffectedSOPClassUID = request.sop_class_uid
            response.AffectedSOPInstanceUID = request.sop_instance_uid
            response.Status = status
            super().send_msg(response, request.context_id)
            return
        value = b"\x03" + encoded  # last fragment of a command set
        send_now = getattr(self.dul, "send_pdata_now", None)
        if send_now is not None and send_now(request.context_id, value):
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list = [[request.context_id, value]]  # type: ignore[list-item]
        self.dul.send_pdu(pdata)

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
        encoded = None
        if (
            isinstance(primitive, C_STORE)
            and primitive.MessageIDBeingRespondedTo is not None
            and primitive.Status is not None
            and all(
                getattr(primitive, name, None) is None
                for name in ("ErrorComment", "OffendingElement", "ErrorID")
            )
        ):
            encoded = _store_response(
                str(primitive.AffectedSOPClassUID or ""),
                primitive.MessageIDBeingRespondedTo,
                primitive.Status,
                str(primitive.AffectedSOPInstanceUID or ""),
            )
        if encoded is None:
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list = [[context_id, b"\x03" + encoded]]  # type: ignore[list-item]
        self.dul.send_pdu(pdata)


def _command_fields(command: bytes) -> dict[int, int | str] | None:
    """The US and UI elements of a command set (group 0000, Implicit VR LE), or None."""
    fields: dict[int, int | str] = {}
    pos = 0
    end = len(command)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHL", command, pos)
        pos += 8
        if group != 0x0000 or pos + length > end:
            return None
        value = command[pos : pos + length]
        pos += length
        if element in (0x0100, 0x0110, 0x0800, 0x0700):
            if length != 2:
                return None
            fields[element] = struct.unpack("<H", value)[0]
        elif element in (0x0002, 0x1000):
            # Not ASCII: no UID at all (refused later); the parse itself goes on.
            text = value.decode("ascii") if value.isascii() else ""
            fields[element] = text.rstrip("\x00 ").lstrip(" ")
    return fields


def _implicit(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def _uid_value(uid: str) -> bytes | None:
    if not uid.isascii():
        return None
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _store_response(
    class_uid: str, message_id: int, status: int, instance_uid: str
) -> bytes | None:
    """The command set of a plain C-STORE-RSP (Implicit VR Little Endian), or None."""
    class_raw = _uid_value(class_uid)
    instance_raw = _uid_value(instance_uid)
    if class_raw is None or instance_raw is None:
        return None
    body = b"".join(
        (
            _implicit(0x0002, class_raw),
            _implicit(0x0100, struct.pack("<H", 0x8001)),
            _implicit(0x0120, struct.pack("<H", message_id)),
            _implicit(0x0800, struct.pack("<H", 0x0101)),
            _implicit(0x0900, struct.pack("<H", status)),
            _implicit(0x1000, instance_raw),
        )
    )
    return _implicit(0x0000, struct.pack("<L", len(body))) + body
