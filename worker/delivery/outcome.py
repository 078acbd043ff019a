"""How a sender reports a failed attempt: worth retrying, or refused for good.

A sender returns normally only when the destination acknowledged; everything else is one
of these two exceptions, and the runner turns them into ``retrying`` or ``dead``.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A send that did not end in an acknowledgement; ``str()`` is the reason recorded."""


class RetryableError(DeliveryError):
    """Nothing reached the destination, or it could not say yes now (down, timeout, 5xx, AE)."""


class RefusedError(DeliveryError):
    """The destination answered no in a way a retry cannot change (DICOM failure, 4xx)."""
