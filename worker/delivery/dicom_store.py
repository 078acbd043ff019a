"""DICOM C-STORE of a result's documents (SR, key images, KOS) to one PACS.

One association per delivery carries every object; its SOP Instance UIDs are fixed by the
result (``worker.reports.result_uids``), so a re-send after a crash between the PACS's
acknowledgement and our commit stores the same instances again, not copies.

A failure status refuses the delivery for good (the status in the reason); no association,
an abort or a silent peer is worth another attempt.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    KeyObjectSelectionDocumentStorage,
)
from pynetdicom import AE

from triage.destinations import DicomDestination
from worker.delivery.outcome import RefusedError, RetryableError

log = logging.getLogger(__name__)

# Warnings (coercion, elements discarded, not validated) still mean "stored".
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
_SR_CLASSES = {Comprehensive3DSRStorage, ComprehensiveSRStorage, EnhancedSRStorage}


@dataclass
class StoreReport:
    """What one delivery took: association set-up and each C-STORE, in seconds."""

    associate_s: float = 0.0
    stores: list[tuple[str, float]] = field(default_factory=list)  # (SOP Class name, s)
    release_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "associate_s": round(self.associate_s, 4),
            "stores": [(name, round(s, 4)) for name, s in self.stores],
            "release_s": round(self.release_s, 4),
        }


def _order(ds: Dataset) -> int:
    """SR first (what the radiologist reads), key images next, the KOS that points at them last."""
    sop_class = UID(ds.SOPClassUID)
    if sop_class in _SR_CLASSES:
        return 0
    if sop_class == KeyObjectSelectionDocumentStorage:
        return 2
    return 1


def load_documents(folder: Path) -> list[Dataset]:
    """The spooled documents of a result in sending order; raises RefusedError if none."""
    files = sorted(folder.glob("*.dcm"))
    if not files:
        raise RefusedError(f"no documents in {folder} (result spool lost?)")
    datasets = [dcmread(path) for path in files]
    return sorted(datasets, key=lambda ds: (_order(ds), str(ds.SOPInstanceUID)))


def tls_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client context for ``+tls`` destinations: verify the PACS; present ours if we have one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


def send_documents(
    destination: DicomDestination,
    datasets: list[Dataset],
    *,
    calling_aet: str,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> StoreReport:
    """C-STORE every dataset over one association; returns timings when all were stored.

    Raises
    ------
    RetryableError
        No association (peer down, rejected, TLS failure) or no response to a C-STORE.
    RefusedError
        The peer answered a C-STORE with a failure status (given in hex).
    """
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        for ds in datasets:
            own = ds.file_meta.get("TransferSyntaxUID")
            if str(ds.SOPClassUID) == sop_class and own and own not in syntaxes:
                syntaxes.insert(0, own)
        ae.add_requested_context(sop_class, syntaxes)
    report = StoreReport()
    started = time.perf_counter()
    tls_args = (tls, destination.host) if destination.tls and tls is not None else None
    try:
        assoc = ae.associate(
            destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args
        )
    except (OSError, ssl.SSLError) as exc:
        raise RetryableError(f"cannot connect to {destination.key}: {exc}") from exc
    report.associate_s = time.perf_counter() - started
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
        raise RetryableError(f"no association with {destination.key} ({why})")
    try:
        for ds in datasets:
            name = UID(ds.SOPClassUID).name
            begun = time.perf_counter()
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:  # no accepted context for it
                raise RefusedError(f"{destination.key} cannot take {name}: {exc}") from exc
            report.stores.append((name, time.perf_counter() - begun))
            if not status or "Status" not in status:
                raise RetryableError(f"no C-STORE response from {destination.key} for {name}")
            code = int(status.Status)
            if code not in STORED:
                raise RefusedError(
                    f"{destination.key} refused {name} {ds.SOPInstanceUID}: status 0x{code:04X}"
                )
        released = time.perf_counter()
        assoc.release()
        report.release_s = time.perf_counter() - released
    finally:
        if assoc.is_established:
            assoc.abort()
    return report
