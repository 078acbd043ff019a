"""DICOM delivery over TLS (``+tls``): the PACS's certificate is verified, ours presented."""

from __future__ import annotations

from collections.abc import Callable

from db.vocabulary import DeliveryState
from listener.tls import server_context
from tests.delivery.conftest import Outbox
from tests.delivery.peers import PynetdicomScp
from tests.listener.test_scp import Certificates, certificates  # noqa: F401 - the fixture


def test_tls_destination_gets_the_result_over_mutual_tls(
    make_outbox: Callable[..., Outbox],
    certificates: Certificates,  # noqa: F811
) -> None:
    scp = PynetdicomScp(
        aet="SECUREPACS",
        ssl_context=server_context(
            certificates.server_cert, certificates.server_key, certificates.ca
        ),
    )
    scp.start()
    try:
        box = make_outbox(
            dicom_destinations_tls_ca=certificates.ca,
            tls_cert=certificates.client_cert,
            tls_key=certificates.client_key,
        )
        box.queue(("dicom", scp.destination))
        box.runner().run_due()
    finally:
        scp.stop()
    [row] = box.rows()
    assert row.state == DeliveryState.SENT, row.last_error
    assert len(scp.stored) == 2


def test_an_untrusted_pacs_certificate_is_not_sent_to(
    make_outbox: Callable[..., Outbox],
    certificates: Certificates,  # noqa: F811
) -> None:
    scp = PynetdicomScp(
        aet="SECUREPACS",
        ssl_context=server_context(certificates.server_cert, certificates.server_key, None),
    )
    scp.start()
    try:
        box = make_outbox()  # system CAs only: our private CA is not trusted
        box.queue(("dicom", scp.destination))
        box.runner().run_due()
    finally:
        scp.stop()
    [row] = box.rows()
    assert row.state == DeliveryState.RETRYING
    assert scp.stored == []
