"""The receive path's bounds: what one peer may make the listener hold, and for how long.

A DICOM peer on the hospital network is not trusted to be well behaved: a scanner with a
firmware bug, a port scanner or an attacker all reach the same socket. Every quantity a
peer controls is therefore capped before it is allocated or waited for:

- a PDU body is read only after its declared length is checked: P-DATA-TF against the
  maximum PDU length we advertised (plus one PDV item header), association PDUs against
  :data:`MAX_ASSOCIATION_PDU`; anything larger is answered with one A-ABORT and closed;
- a command set (a C-STORE command is ~200 bytes) against :data:`MAX_COMMAND_BYTES`;
- a data set kept in memory (one that is not streamed to the spool) against
  :data:`MAX_IN_MEMORY_DATASET`; a streamed one against the ``max_instance_bytes``
  setting, beyond which its bytes are dropped and the C-STORE is refused;
- the time from TCP accept to a complete A-ASSOCIATE-RQ (``association_request_timeout``)
  and the time any partial PDU may take (the network timeout);
- connections that have not associated yet have their own, larger limit
  (``max_pending_connections``); when it is full the oldest is closed, so a flood of idle
  sockets can neither hold the association slots nor keep a real scanner out.

Worst case per association (see the README): the PDU being read, the PDU buffer the first
64 KiB of a streamed data set still points into, one command set and one in-memory data
set: 2 x (max PDU + 12) + MAX_COMMAND_BYTES + MAX_IN_MEMORY_DATASET.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ASSOCIATION_PDU = 256 * 1024
"""Largest A-ASSOCIATE/RELEASE/ABORT PDU body accepted.

128 presentation contexts (the most a request can carry) with a dozen transfer syntaxes
each come to about 60 KiB; 256 KiB leaves room for long extended negotiation items.
"""

MAX_COMMAND_BYTES = 64 * 1024
"""Largest command set accepted, over all its fragments (a C-STORE-RQ is ~200 bytes)."""

MAX_IN_MEMORY_DATASET = 8 * 1024 * 1024
"""Largest data set held in memory rather than streamed to the spool (a C-ECHO has none;
only a C-STORE whose spool file could not be opened, or one refused before it is stored,
is kept in memory, for the quarantine)."""

UNLIMITED_PDU_CAP = 64 * 1024 * 1024
"""P-DATA-TF cap when the listener advertises no maximum length (``TRIAGE_MAX_PDU=0``)."""

PDV_ITEM_HEADER = 6
"""Bytes of one presentation data value item header (length, context id, control)."""

FRAGMENT_OVERHEAD = 256
"""Bytes charged per kept fragment beyond its length (the Python objects that hold it),
so a peer sending one-byte fragments cannot make 8 MiB of data cost gigabytes."""


@dataclass(frozen=True)
class ReceiveLimits:
    """The bounds one listener applies to every connection (built from the settings)."""

    max_pdu: int = 131072
    """Maximum PDU length we advertise (0 = none advertised)."""
    max_instance_bytes: int = 2 * 1024**3
    """Largest data set of one C-STORE; larger ones are refused and their bytes dropped."""
    association_request_timeout: float = 5.0
    """Seconds from TCP accept to a complete A-ASSOCIATE-RQ."""
    network_timeout: float = 60.0
    """Seconds any partial PDU, or an idle association, may take."""
    max_associations: int = 16
    """Established associations at once (the association slots)."""
    max_pending_connections: int = 128
    """Connections still before or in association negotiation."""

    @property
    def max_pdata_body(self) -> int:
        """Largest P-DATA-TF body accepted: what we advertised plus one PDV item header."""
        if self.max_pdu <= 0:
            return UNLIMITED_PDU_CAP
        return self.max_pdu + PDV_ITEM_HEADER

    def max_body(self, pdu_type: int) -> int:
        """Largest body accepted for a PDU of ``pdu_type`` (P-DATA-TF is type 4)."""
        return self.max_pdata_body if pdu_type == 0x04 else MAX_ASSOCIATION_PDU
