"""Health probes for containers: ``python -m triage.health dicom|celery|http URL``.

A container's HEALTHCHECK and a Kubernetes exec probe need a yes/no that means "this
service answers", not "this process exists". Each probe here asks the service the way its
clients do and exits 0 (healthy) or 1 (not), printing one line on why:

- ``dicom``: an A-ASSOCIATE-RQ to the listener's own port. An A-ASSOCIATE-AC *or* an
  A-ASSOCIATE-RJ both mean the listener's DICOM service answered; the probe's calling AE
  (``HEALTHCHECK``) need not be on the site's allowlist, so the allowlist never has to be
  widened for monitoring. With TLS configured the probe only checks that the port accepts
  TCP connections (a client certificate the listener would accept is not ours to hold).
- ``celery``: a Celery remote-control ping to ``celery@<this host name>``, the name
  ``triage worker`` (and the delivery worker) run under, through the configured broker:
  a worker whose consumer is stuck stops answering.
- ``http URL``: a GET answered 2xx (the web app's ``/metrics``).

The probe is in ``triage`` (not the listener or worker) because it must load neither
torch nor the listener's server: a probe that runs every 30 s stays cheap.
"""

from __future__ import annotations

import logging
import socket
import sys
import urllib.error
import urllib.request

import click

from triage.settings import Settings, get_settings

HEALTHCHECK_AE = "HEALTHCHECK"
"""Calling AE title of the DICOM probe (a rejection by the allowlist still counts as alive)."""


def dicom_answers(host: str, port: int, called_ae: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether a DICOM listener at ``host:port`` answers an association request.

    Returns ``(healthy, why)``. Accepted and rejected both count as healthy: either is a
    whole A-ASSOCIATE answer from a live upper layer; an abort, a closed socket or silence
    until ``timeout`` do not.
    """
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=HEALTHCHECK_AE)
    ae.add_requested_context(Verification, [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    try:
        assoc = ae.associate(host, port, ae_title=called_ae)
        if assoc.is_established:
            assoc.release()
            return True, "association accepted"
        if assoc.is_rejected:
            return True, "association rejected (the listener answered)"
        return False, "no association answer (aborted, refused or timed out)"
    finally:
        ae.shutdown()


def tcp_accepts(host: str, port: int, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether ``host:port`` accepts a TCP connection (the probe under TLS)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, "TCP connection accepted"
    except OSError as exc:
        return False, f"TCP connection failed: {exc.__class__.__name__}"


def celery_answers(settings: Settings, node: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the Celery worker ``node`` answers a remote-control ping through the broker."""
    from triage.queue import make_celery

    app = make_celery(settings)
    try:
        replies = app.control.ping(destination=[node], timeout=timeout)
    except Exception as exc:  # broker down: unhealthy, say which kind of failure
        return False, f"broker unreachable: {exc.__class__.__name__}"
    finally:
        app.close()
    if any(node in reply for reply in replies):
        return True, f"{node} answered"
    return False, f"{node} did not answer within {timeout:.0f} s"


def http_answers(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether a GET of ``url`` is answered with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (local URL)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"no HTTP answer: {exc.__class__.__name__}"
    return 200 <= status < 300, f"HTTP {status}"


def _finish(result: tuple[bool, str]) -> None:
    healthy, why = result
    click.echo(f"{'healthy' if healthy else 'unhealthy'}: {why}")
    sys.exit(0 if healthy else 1)


@click.group()
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for an answer.")
@click.pass_context
def main(ctx: click.Context, timeout: float) -> None:
    """Probe one pacs-triage service; exit 0 when it answers."""
    logging.basicConfig(level=logging.CRITICAL)  # pynetdicom's per-association lines
    ctx.obj = timeout


@main.command()
@click.pass_obj
def dicom(timeout: float) -> None:
    """The listener on this host answers an association request."""
    settings = get_settings()
    port = settings.dicom.port
    if settings.dicom.tls_cert is not None:
        _finish(tcp_accepts("127.0.0.1", port, timeout))
    _finish(dicom_answers("127.0.0.1", port, settings.dicom.ae_title, timeout))


@main.command()
@click.option("--node", default=None, help="Celery node name (default: celery@<host name>).")
@click.pass_obj
def celery(timeout: float, node: str | None) -> None:
    """The Celery worker on this host answers a ping through the broker."""
    _finish(celery_answers(get_settings(), node or f"celery@{socket.gethostname()}", timeout))


@main.command()
@click.argument("url")
@click.pass_obj
def http(timeout: float, url: str) -> None:
    """URL answers a GET with 2xx."""
    _finish(http_answers(url, timeout))


if __name__ == "__main__":
    main()
