"""TLS for the DICOM port: server certificate, and mutual TLS when a CA is configured."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """A server-side context (TLS 1.2+); with ``ca`` the peer must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context
