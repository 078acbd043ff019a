"""The C-STORE SCP: which SOP classes and transfer syntaxes we accept, and how it is started.

We accept every storage SOP class (a hospital sends CT, MR, CR/DX, secondary capture,
enhanced CT, SR and more; routing later decides what is triaged) in uncompressed and the
common compressed transfer syntaxes, so a scanner never has to transcode for us.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.events import Event

# pynetdicom generates its SOP class names at import time, so its stubs cannot list them.
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target
from sqlalchemy.orm import Session, sessionmaker

from db.audit import record_event
from db.vocabulary import AuditEventType
from listener.fastpath import ReceiveLimits, make_request_handler
from listener.handlers import (
    StoreContext,
    begin_instance,
    handle_association_end,
    handle_echo,
    handle_store,
    store_received,
)
from listener.tls import server_context
from triage.settings import Settings

log = logging.getLogger(__name__)

ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


LISTEN_BACKLOG = 128
"""Smallest accept queue the listening socket gets (see :func:`start_scp`)."""


def build_ae(settings: Settings) -> AE:
    """An AE with our contexts, timeouts, PDU size, association limit and calling-AE allowlist."""
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        # pynetdicom's standard handlers format every PDU and DIMSE message for its INFO and
        # DEBUG logs (and join each received data set to do so) even when those logs are
        # off; that was ~10% of a CT study's receive CPU. Kept when its logging is on.
        _config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=settings.dicom.ae_title)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is None:  # pynetdicom builds each with its SOP class UID
            raise RuntimeError("pynetdicom storage context without an abstract syntax")
        ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.maximum_pdu_size = settings.dicom.max_pdu
    ae.acse_timeout = settings.dicom.acse_timeout
    ae.dimse_timeout = settings.dicom.dimse_timeout
    ae.network_timeout = settings.dicom.network_timeout
    ae.maximum_associations = settings.dicom.max_associations
    if settings.dicom.allowed_calling_aets:
        ae.require_calling_aet = list(settings.dicom.allowed_calling_aets)
    return ae


def receive_limits(settings: Settings) -> ReceiveLimits:
    """The receive path's bounds (:mod:`listener.fastpath.limits`) from the settings."""
    dicom = settings.dicom
    return ReceiveLimits(
        max_pdu=dicom.max_pdu,
        max_instance_bytes=dicom.max_instance_bytes,
        association_request_timeout=dicom.association_request_timeout,
        network_timeout=dicom.network_timeout,
        max_associations=dicom.max_associations,
        max_pending_connections=dicom.max_pending_connections,
    )


def _audit_rejection(event: Event, sessions: sessionmaker[Session]) -> None:
    calling = str(event.assoc.requestor.ae_title).strip()
    log.warning("association from %s (%s) rejected", calling, event.assoc.requestor.address)
    try:
        with sessions() as session:
            record_event(
                session,
                AuditEventType.ASSOCIATION_REJECTED,
                actor=f"ae:{calling}",
                detail={"address": event.assoc.requestor.address},
            )
            session.commit()
    except Exception:
        log.exception("could not audit an association rejection")


@dataclass
class RunningSCP:
    """A started SCP; ``port`` is the bound port (useful when 0 was asked for)."""

    ae: AE
    server: ThreadedAssociationServer

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop accepting and close the server socket."""
        self.server.shutdown()
        self.ae.shutdown()


def receive_path_handler(settings: Settings, ctx: StoreContext) -> type[RequestHandler]:
    """The per-connection request handler of the receive path ``settings`` chooses.

    The streaming path (:mod:`listener.fastpath`) is the default; with
    ``dicom_fast_path`` off, or on a pynetdicom version the streaming path was not tested
    with (:func:`make_request_handler` warns), it is pynetdicom's stock ``RequestHandler``,
    whose ``EVT_C_STORE`` goes to :func:`listener.handlers.handle_store` with the data set
    in memory. Both end in :func:`listener.handlers.store_received`, so both store alike.
    """
    if not settings.dicom.fast_path:
        log.info("receive path: pynetdicom's stock receive path (dicom_fast_path is off)")
        return RequestHandler
    handler = make_request_handler(
        functools.partial(store_received, ctx),
        functools.partial(begin_instance, ctx),
        receive_limits(settings),
    )
    if handler is not RequestHandler:
        log.info("receive path: streaming (listener.fastpath)")
    return handler


def start_scp(settings: Settings, ctx: StoreContext, *, port: int | None = None) -> RunningSCP:
    """Start serving in background threads and return at once."""
    ae = build_ae(settings)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store, [ctx]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_RELEASED, handle_association_end, [ctx]),
        (evt.EVT_ABORTED, handle_association_end, [ctx]),
        (evt.EVT_CONN_CLOSE, handle_association_end, [ctx]),
        (evt.EVT_REJECTED, _audit_rejection, [ctx.sessions]),
    ]
    ssl_context = None
    if settings.dicom.tls_cert is not None and settings.dicom.tls_key is not None:
        ssl_context = server_context(
            settings.dicom.tls_cert, settings.dicom.tls_key, settings.dicom.tls_ca
        )
    address = (settings.dicom.bind, settings.dicom.port if port is None else port)
    # make_server (not start_server) so each connection gets the request handler of the
    # receive path chosen by settings.dicom.fast_path.
    server = ae.make_server(
        address,
        evt_handlers=handlers,
        ssl_context=ssl_context,
        server_class=ThreadedAssociationServer,
        request_handler=(request_handler := receive_path_handler(settings, ctx)),
    )
    # socketserver listens with a backlog of 5: a burst of connections (a flood, or every
    # modality reconnecting after an outage) overflows the kernel's accept queue, and the
    # SYNs dropped cost a real sender seconds of TCP retries (1 s, 3 s, 7 s ...): 500 idle
    # connections opened beside an in-process listener took 72 s. Listen again with room
    # for the whole pending pool (Linux caps it at net.core.somaxconn).
    assert server.socket is not None, "make_server returns a bound, listening server"
    server.socket.listen(max(LISTEN_BACKLOG, settings.dicom.max_pending_connections))
    if request_handler is not RequestHandler:
        # The streaming path counts association slots itself (pending connections apart,
        # listener.fastpath.gate); pynetdicom's own count includes every connection
        # thread, pending and closing ones too, so it must never be the one that refuses.
        ae.maximum_associations = 1 << 20
    thread = threading.Thread(
        target=make_target(server.serve_forever), name="AcceptorServer", daemon=True
    )
    thread.start()
    ae._servers.append(server)  # as start_server does: shutdown() removes it again
    log.info(
        "listening as %s on %s:%d%s",
        settings.dicom.ae_title,
        address[0],
        server.server_address[1],
        " (TLS)" if ssl_context else "",
    )
    return RunningSCP(ae, server)
