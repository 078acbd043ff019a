"""The streaming receive path: the listener's fast C-STORE receiver, isolated behind a small interface.

Why a package of its own: these modules subclass pynetdicom internals (the DUL reactor,
the DIMSE provider, the acceptor loop) and parse DICOM bytes by hand, for about 3x the
ingest speed of pynetdicom's stock receive path (``bench/ingest`` measures both). That
speed is paid for with a referee: the tests compare the header scanner with pydicom on
every file they can reach, the C-STORE response bytes with pynetdicom's own encoding,
and run the listener's whole suite a second time with ``TRIAGE_DICOM_FAST_PATH=false``.

What the rest of the listener uses:

- :func:`make_request_handler`: the per-connection handler class for the SCP, bounded by
  :class:`ReceiveLimits`;
- :func:`scan_header`: grouping tags straight from the received bytes (``None`` = ask pydicom);
- :func:`file_preamble`: the Part 10 wrapper of a received data set;
- :class:`ReceivedInstance` / :class:`ReceivedDataset` and :data:`HEAD_BYTES`.
"""

from listener.fastpath.dimse_store import HEAD_BYTES, ReceivedDataset, ReceivedInstance
from listener.fastpath.header_scan import scan_header
from listener.fastpath.limits import ReceiveLimits
from listener.fastpath.part10 import file_preamble
from listener.fastpath.upper_layer import TESTED_PYNETDICOM, make_request_handler

__all__ = [
    "HEAD_BYTES",
    "TESTED_PYNETDICOM",
    "ReceivedDataset",
    "ReceiveLimits",
    "ReceivedInstance",
    "file_preamble",
    "make_request_handler",
    "scan_header",
]
