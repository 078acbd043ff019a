"""Admission of connections: association slots for associations, a pending pool for the rest.

pynetdicom counts every connection thread against ``maximum_associations``, so 16 idle
TCP connections (a port scan, a half-open flood, a peer that never sends its request)
lock a real scanner out until their ACSE timeout. Here a connection is *pending* from
TCP accept until its A-ASSOCIATE-RQ has been answered and only then takes one of the
association slots. The pending pool is larger and cheap (a pending connection holds at
most one association PDU and is closed by the association request timeout), and when
it is full the oldest pending connection is closed to admit the new one: a real
scanner sends its request within milliseconds, so it is never the oldest for long.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger(__name__)


class ConnectionGate:
    """Counts pending connections and established associations for one listener."""

    def __init__(self, max_associations: int, max_pending: int) -> None:
        if max_associations < 1 or max_pending < 1:
            raise ValueError("max_associations and max_pending must be at least 1")
        self.max_associations = max_associations
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, Callable[[], None]] = OrderedDict()
        self._established = 0

    def admit(self, key: int, close: Callable[[], None]) -> None:
        """Register a new connection as pending; closes the oldest pending one when full."""
        evicted: Callable[[], None] | None = None
        with self._lock:
            if len(self._pending) >= self.max_pending:
                _, evicted = self._pending.popitem(last=False)
            self._pending[key] = close
        if evicted is not None:
            log.warning("pending connections full (%d): closing the oldest", self.max_pending)
            with contextlib.suppress(OSError):  # already closed by its peer
                evicted()

    def leave_pending(self, key: int) -> None:
        """The connection sent its request, or ended: it no longer counts as pending."""
        with self._lock:
            self._pending.pop(key, None)

    def take_slot(self) -> bool:
        """Reserve an association slot; False when all are in use."""
        with self._lock:
            if self._established >= self.max_associations:
                return False
            self._established += 1
            return True

    def free_slot(self) -> None:
        """Give back a slot taken with :meth:`take_slot`."""
        with self._lock:
            self._established = max(0, self._established - 1)
