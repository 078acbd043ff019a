"""Where results go: the text forms operators write, parsed into typed destinations.

One home for the grammar of ``TRIAGE_DICOM_DESTINATIONS`` and friends, so the settings
check a value with the same code the delivery worker later uses to connect:

* DICOM and UPS: ``AET@host:port``, with a ``+tls`` suffix for DICOM over TLS
  (``PACS@pacs.example:2762+tls``);
* HL7 v2 over MLLP: ``host:port``;
* webhooks: ``http://`` or ``https://`` URLs.

A destination's ``key`` (its text form, normalised) is what the outbox stores per row, so
a delivery can be matched to the destination that is configured today.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default repertoire, no backslash
_HOST = re.compile(r"^[A-Za-z0-9.\-]+$|^\[[0-9A-Fa-f:.]+\]$")
TLS_SUFFIX = "+tls"


class Channel(StrEnum):
    """How a result travels; one sender module per channel (``worker/delivery/``)."""

    DICOM = "dicom"
    HL7 = "hl7"
    WEBHOOK = "webhook"
    UPS = "ups"


def check_ae_title(value: str) -> str:
    """``value`` if it is a valid AE title; raises ValueError naming it otherwise."""
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError(f"{value!r} is not a valid AE title (1-16 characters, no '\\')")
    return value


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not _HOST.match(host):
        raise ValueError(f"{what} {text!r} is not host:port")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{what} {text!r} has no valid port (1-65535)")
    return host.strip("[]"), int(port_text)


@dataclass(frozen=True)
class DicomDestination:
    """A DICOM peer (C-STORE SCP or UPS SCP) by AE title, address and port."""

    ae_title: str
    host: str
    port: int
    tls: bool = False

    @property
    def key(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}{TLS_SUFFIX if self.tls else ''}"

    @classmethod
    def parse(cls, text: str, *, allow_tls: bool = True) -> DicomDestination:
        """Parse ``AET@host:port[+tls]``; raises ValueError saying what is wrong."""
        body = text.strip()
        tls = body.endswith(TLS_SUFFIX)
        if tls:
            if not allow_tls:
                raise ValueError(f"{text!r}: {TLS_SUFFIX} is not supported here")
            body = body[: -len(TLS_SUFFIX)]
        aet, sep, address = body.rpartition("@")
        if not sep:
            raise ValueError(f"destination {text!r} is not AET@host:port")
        check_ae_title(aet)
        host, port = _host_port(address, "destination")
        return cls(aet, host, port, tls)


@dataclass(frozen=True)
class Hl7Destination:
    """An HL7 v2 receiver reached over MLLP."""

    host: str
    port: int

    @property
    def key(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Hl7Destination:
        """Parse ``host:port``; raises ValueError saying what is wrong."""
        return cls(*_host_port(text.strip(), "HL7 destination"))


@dataclass(frozen=True)
class WebhookDestination:
    """An HTTP(S) endpoint that receives the signed JSON result."""

    url: str

    @property
    def key(self) -> str:
        return self.url

    @classmethod
    def parse(cls, text: str) -> WebhookDestination:
        """Accept an absolute http(s) URL with a host; raises ValueError otherwise."""
        url = text.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL {url!r} is not an absolute http(s) URL")
        if parts.username or parts.password:
            raise ValueError("webhook URLs must not carry credentials (use TRIAGE_WEBHOOK_SECRET)")
        return cls(url)
