"""Webhook delivery: the result as JSON, POSTed with an HMAC-SHA256 signature.

Headers: ``X-Triage-Delivery-Id`` (stable per delivery, so a receiver drops repeats after a
crash between its 2xx and our commit) and ``X-Triage-Signature: sha256=<hex>`` over the
exact body bytes with ``TRIAGE_WEBHOOK_SECRET``. 2xx means sent; 408/429 and 5xx, a
timeout or no connection mean retry; any other 4xx refuses the delivery for good.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from triage.destinations import WebhookDestination
from worker.delivery.outcome import RefusedError, RetryableError

SIGNATURE_HEADER = "X-Triage-Signature"
DELIVERY_ID_HEADER = "X-Triage-Delivery-Id"
RETRYABLE_4XX = {408, 425, 429}


def sign(body: bytes, secret: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=`` and the hex HMAC."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    """The body bytes: compact, keys sorted, so the same payload always signs the same."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def post(
    destination: WebhookDestination,
    payload: dict[str, Any],
    *,
    secret: bytes,
    delivery_id: str,
    timeout: float,
) -> int:
    """POST ``payload``; returns the 2xx status.

    Raises
    ------
    RetryableError
        No connection, a timeout, 5xx, 408, 425 or 429.
    RefusedError
        Any other 4xx (the reason carries the status and the start of the body), or a 3xx.
    """
    body = encode(payload)
    parts = urlsplit(destination.url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.netloc, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={
                "Content-Type": "application/json",
                DELIVERY_ID_HEADER: delivery_id,
                SIGNATURE_HEADER: sign(body, secret),
                "User-Agent": "pacs-triage",
            },
        )
        response = connection.getresponse()
        text = response.read(500).decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        raise RetryableError(f"webhook {destination.url}: {type(exc).__name__}: {exc}") from exc
    finally:
        connection.close()
    status = response.status
    if 200 <= status < 300:
        return status
    reason = f"webhook {destination.url}: HTTP {status} {response.reason}: {text.strip()[:200]}"
    if status >= 500 or status in RETRYABLE_4XX:
        raise RetryableError(reason)
    raise RefusedError(reason)
