"""pynetdicom event handlers: small functions that return an explicit DICOM status.

Every failure maps to a named status and is never raised into pynetdicom:
0xA700 out of resources (disk full), 0xA900 dataset does not match SOP class,
0xC210 cannot understand (malformed, bad UIDs), 0xC211 unexpected internal error.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from io import BytesIO
from typing import cast

from pydicom import dcmread
from pydicom.tag import Tag
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from sqlalchemy.orm import Session, sessionmaker

from db.audit import record_event
from db.vocabulary import AuditEventType
from listener.assembly import StudyAssembler, traits_of
from listener.fastpath import (
    HEAD_BYTES,
    ReceivedDataset,
    ReceivedInstance,
    file_preamble,
    scan_header,
)
from listener.header import InstanceHeader, MalformedDatasetError, parse_header
from listener.ingest import InstanceRecorder
from listener.spool import IncomingFile, Quarantine, Spool, SpoolFullError
from triage.uids import is_valid_uid

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210
SOP_CLASS_NOT_SUPPORTED = 0x0122
STUDY_UID = Tag(0x0020, 0x000D)
PROCESSING_FAILURE = 0xC211


@dataclass
class StoreContext:
    """What the C-STORE handler needs, bound once when the SCP starts."""

    spool: Spool
    quarantine: Quarantine
    recorder: InstanceRecorder
    assembler: StudyAssembler
    sessions: sessionmaker[Session]


def _calling_aet(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _reject(ctx: StoreContext, calling: str, data: bytes, status: int, reason: str) -> int:
    path = ctx.quarantine.keep(
        data,
        reason,
        {"calling_aet": calling, "status": f"0x{status:04X}"},
    )
    log.warning(
        "rejected dataset from %s with 0x%04X: %s (kept as %s)", calling, status, reason, path.name
    )
    try:
        with ctx.sessions() as session:
            record_event(
                session,
                AuditEventType.INSTANCE_QUARANTINED,
                actor=f"ae:{calling}",
                detail={"reason": reason[:500], "status": status, "file": path.name},
            )
            session.commit()
    except Exception:
        log.exception("could not audit a quarantined dataset")
    return status


@functools.lru_cache(maxsize=256)
def _sop_class_name(uid: str) -> str:
    return UID(uid).name  # UID() validates with a regular expression: once per class


def _iod_problem(header: InstanceHeader) -> str | None:
    """Why an image dataset does not match its (image) SOP class, or None."""
    name = _sop_class_name(header.sop_class_uid)
    if "Image Storage" not in name:
        return None
    if not header.rows or not header.columns:
        return f"{name} without Rows/Columns"
    if header.has_pixel_data is False:
        return f"{name} without Pixel Data"
    return None


def _fragments(dataset: object) -> list[memoryview]:
    """The received data set's bytes, as the fragments the streaming upper layer kept."""
    if isinstance(dataset, ReceivedDataset):
        return dataset.fragments
    return [memoryview(cast(BytesIO, dataset).getvalue())]


def _head(fragments: list[memoryview], size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the data set (all of it when it is shorter)."""
    if fragments and len(fragments[0]) >= size:
        return bytes(fragments[0][:size])
    head = bytearray()
    for fragment in fragments:
        head += fragment[: size - len(head)]
        if len(head) >= size:
            break
    return bytes(head)


def _tail(fragments: list[memoryview], size: int = 64) -> bytes:
    tail = b""
    for fragment in reversed(fragments):
        tail = bytes(fragment[-(size - len(tail)) :]) + tail
        if len(tail) >= size:
            break
    return tail


def handle_store(event: Event, ctx: StoreContext) -> int:
    """EVT_C_STORE handler: the pynetdicom-event face of :func:`store_received`."""
    request = cast(C_STORE, event.request)
    calling = _calling_aet(event)
    try:
        received = ReceivedInstance(
            calling_aet=calling,
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax=str(event.context.transfer_syntax),
            fragments=_fragments(request.DataSet),
            abstract_syntax=str(event.context.abstract_syntax or ""),
            association=id(event.assoc),
        )
    except Exception as exc:
        log.exception("could not read the received dataset")
        return _reject(ctx, calling, b"", CANNOT_UNDERSTAND, f"unreadable dataset: {exc}")
    return store_received(ctx, received)


def begin_instance(
    ctx: StoreContext, calling_aet: str, sop_class_uid: str, sop_instance_uid: str, syntax: str
) -> IncomingFile:
    """The spool file an arriving instance is written to, its Part 10 preamble already in."""
    incoming = ctx.spool.begin()
    incoming.write((file_preamble(sop_class_uid, sop_instance_uid, syntax, calling_aet),))
    return incoming


def store_received(ctx: StoreContext, received: ReceivedInstance) -> int:
    """Store one instance durably, record it, note it for completion; answer its status.

    Called by :func:`handle_store`, and directly by the streaming upper layer, which
    skips pynetdicom's request primitive and event for a C-STORE (see
    :mod:`listener.fastpath.upper_layer`) and has usually written the instance to a spool
    temporary file (``received.sink``, from :func:`begin_instance`) while it arrived.
    That file is committed or removed before this returns.
    """
    incoming = cast(IncomingFile | None, received.sink)
    try:
        return _store(ctx, received, incoming)
    finally:
        if incoming is not None:
            incoming.discard()  # no-op once committed


def _transport_problem(received: ReceivedInstance) -> tuple[int, str] | None:
    """Why the C-STORE request itself (not its data set) is refused, with its status."""
    if received.refused is not None:
        return OUT_OF_RESOURCES, received.refused
    for value, what in (
        (received.sop_class_uid, "SOPClassUID"),
        (received.sop_instance_uid, "SOPInstanceUID"),
    ):
        if not is_valid_uid(value):
            return CANNOT_UNDERSTAND, f"affected {what} is not a valid DICOM UID: {value[:80]!r}"
    if received.abstract_syntax and received.sop_class_uid != received.abstract_syntax:
        return (
            SOP_CLASS_NOT_SUPPORTED,
            f"affected SOP class {received.sop_class_uid} is not the presentation "
            f"context's {received.abstract_syntax}",
        )
    return None


def _store(ctx: StoreContext, received: ReceivedInstance, incoming: IncomingFile | None) -> int:
    calling = received.calling_aet
    syntax = received.transfer_syntax
    fragments = received.fragments
    problem = _transport_problem(received)
    if problem is not None:
        # Oversized bytes were dropped as they arrived; the rest is kept with the reason.
        if received.refused:
            kept = b""
        elif incoming is not None:
            kept = incoming.contents()
        else:
            kept = _as_part10(received, fragments)
        return _reject(ctx, calling, kept, *problem)
    if incoming is None:
        preamble = file_preamble(received.sop_class_uid, received.sop_instance_uid, syntax, calling)
        parts: list[bytes | memoryview] = [preamble, *fragments]
        total = sum(len(f) for f in fragments)
        tail = _tail(fragments)

        def whole() -> bytes:
            return b"".join(parts)
    else:
        try:
            incoming.check()  # the bytes never all reached the spool: nothing to judge
        except SpoolFullError as exc:
            log.error("spool full: %s", exc)
            _hold_study(ctx, _study_uid_of(_head(fragments), received))
            return OUT_OF_RESOURCES
        except OSError:
            log.exception("could not write a received instance to the spool")
            return PROCESSING_FAILURE
        total = received.size
        tail = received.tail
        whole = incoming.contents
    try:
        header = scan_header(_head(fragments), total, tail, syntax)
        if header is None:  # the fast scanner was unsure: pydicom decides
            header = parse_header(whole())
    except MalformedDatasetError as exc:
        return _reject(ctx, calling, whole(), CANNOT_UNDERSTAND, str(exc))

    if header.sop_class_uid != received.sop_class_uid:
        return _reject(
            ctx,
            calling,
            whole(),
            SOP_CLASS_MISMATCH,
            f"SOP Class UID {header.sop_class_uid} does not match the request's "
            f"{received.sop_class_uid}",
        )
    iod_problem = _iod_problem(header)
    if iod_problem:
        return _reject(ctx, calling, whole(), SOP_CLASS_MISMATCH, iod_problem)
    if header.sop_instance_uid != received.sop_instance_uid:
        return _reject(
            ctx,
            calling,
            whole(),
            CANNOT_UNDERSTAND,
            "SOP Instance UID in the dataset differs from the request's",
        )

    try:
        if ctx.recorder.is_known(header.sop_instance_uid):
            log.info("re-sent instance ignored", extra={"study_uid": header.study_uid})
            return SUCCESS
        uids = (header.study_uid, header.series_uid, header.sop_instance_uid)
        if incoming is None:
            spooled = ctx.spool.write(*uids, parts)
        else:
            spooled = ctx.spool.commit(incoming, *uids)
        outcome = ctx.recorder.record(
            header, spooled, calling_aet=calling, transfer_syntax_uid=syntax
        )
    except SpoolFullError as exc:
        log.error("spool full: %s", exc)
        _hold_study(ctx, header.study_uid)
        return OUT_OF_RESOURCES
    except Exception:
        log.exception("could not store instance", extra={"study_uid": header.study_uid})
        return PROCESSING_FAILURE

    if outcome.new:
        ctx.assembler.note_instance(
            study_id=outcome.study_id,
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            instance_number=header.instance_number,
            position=header.position_along_normal,
            expected=header.images_in_acquisition,
            thickness=header.slice_thickness,
            traits=traits_of(header),
            association=received.association,
        )
    return SUCCESS


def _as_part10(received: ReceivedInstance, fragments: list[memoryview]) -> bytes:
    """The received data set as a Part 10 file, or bare when its UIDs cannot be encoded."""
    data = b"".join(fragments)
    try:
        preamble = file_preamble(
            received.sop_class_uid,
            received.sop_instance_uid,
            received.transfer_syntax,
            received.calling_aet,
        )
    except (UnicodeError, ValueError):
        return data
    return preamble + data


def _study_uid_of(head: bytes, received: ReceivedInstance) -> str | None:
    """The Study Instance UID in the first bytes of a data set the spool could not take."""
    try:
        ds = dcmread(
            BytesIO(_as_part10(received, [memoryview(head)])),
            stop_before_pixels=True,
            specific_tags=[STUDY_UID],
        )
        uid = ds.get("StudyInstanceUID")
    except Exception:  # the head of a data set can end anywhere: the UID is a bonus
        return None
    return str(uid) if is_valid_uid(uid) else None


def _hold_study(ctx: StoreContext, study_uid: str | None) -> None:
    """A full spool refused an instance: its study must not complete without it."""
    if study_uid is not None:
        ctx.assembler.hold_for_space(study_uid)


def handle_association_end(event: Event, ctx: StoreContext) -> None:
    """EVT_RELEASED / EVT_ABORTED / EVT_CONN_CLOSE: the sender is gone, studies may complete."""
    try:
        ctx.assembler.association_ended(id(event.assoc))
    except Exception:  # an event handler must never raise into pynetdicom
        log.exception("could not note the end of an association")


def handle_echo(event: Event) -> int:
    """Verification (C-ECHO): always success while the listener is up."""
    return SUCCESS
