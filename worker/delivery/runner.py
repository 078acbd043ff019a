"""The outbox runner: claim due deliveries, send each through its channel, settle the row.

It holds no state of its own: everything is in the outbox, so a runner started after any
crash (its own, the database's, the destination's) simply finds the rows that are due and
goes on. A row a dead runner left ``sending`` is due again when its lease runs out.

:class:`DeliveryLoop` runs the runner on a timer in a thread (the delivery worker's sweep);
the delivery Celery task (``worker.delivery.app``) runs it at once for the rows a
prediction just queued, so a result does not wait for the next sweep.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import outbox
from db.models import utcnow
from db.vocabulary import DeliveryState
from triage.destinations import (
    Channel,
    DicomDestination,
    Hl7Destination,
    WebhookDestination,
)
from triage.settings import Settings
from worker.delivery import dicom_store, hl7_oru, ups, webhook
from worker.delivery.backoff import retry_delay
from worker.delivery.outcome import DeliveryError, RefusedError, RetryableError
from worker.delivery.payload import result_payload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settled:
    """What became of one claimed delivery."""

    delivery_id: int
    state: DeliveryState | None  # None: another sender owns the row now
    detail: Any = None  # what the destination said (dict), or the failure reason (str)


class DeliveryRunner:
    """Sends claimed deliveries; one per process (it keeps a TLS context)."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._tls: Any = None

    @property
    def lease(self) -> timedelta:
        """How long a claim holds a row: a connection plus an acknowledgement per object.

        The largest delivery is the DICOM one: SR, the key images and the KOS, each waiting
        up to the acknowledgement timeout. A live send that still outlasts its lease is sent
        again by another claimer, which is harmless (the same UIDs), never lost.
        """
        cfg = self._settings.delivery
        return timedelta(seconds=cfg.ack_timeout * (cfg.key_image_count + 4) + 5)

    def run_due(self, *, ids: list[int] | None = None, limit: int = 10) -> list[Settled]:
        """Claim and send due deliveries (only ``ids`` if given) until none is left."""
        settled: list[Settled] = []
        while True:
            with self._sessions() as session:
                claims = outbox.claim_due(session, lease=self.lease, limit=limit, ids=ids)
            if not claims:
                return settled
            settled.extend(self.send(claim) for claim in claims)

    def send(self, claim: outbox.Claim) -> Settled:
        """Send one claimed delivery and record the outcome (each in its own commit)."""
        with self._sessions() as session:
            try:
                ctx = outbox.context(session, claim.delivery_id)
            except LookupError as exc:
                log.warning("delivery %d: %s", claim.delivery_id, exc)
                return Settled(claim.delivery_id, None, str(exc))
        try:
            detail = self._dispatch(ctx)
        except DeliveryError as exc:
            return self._failed(claim, exc)
        except Exception as exc:  # a bug or a broken spool must not kill the sweep
            log.exception("delivery %d: unexpected error", claim.delivery_id)
            return self._failed(claim, RetryableError(f"{type(exc).__name__}: {exc}"))
        with self._sessions() as session:
            outbox.mark_sent(session, claim.delivery_id, detail=detail)
        log.info(
            "delivery %d sent (%s %s, attempt %d)",
            claim.delivery_id,
            claim.channel,
            claim.destination,
            claim.attempt,
        )
        return Settled(claim.delivery_id, DeliveryState.SENT, detail)

    def _failed(self, claim: outbox.Claim, error: DeliveryError) -> Settled:
        cfg = self._settings.delivery
        reason = str(error)
        retry_at = None
        if isinstance(error, RetryableError):
            if claim.attempt >= cfg.max_attempts:
                reason = f"gave up after {claim.attempt} attempts: {reason}"
            else:
                delay = retry_delay(
                    claim.attempt, base=cfg.backoff_seconds, cap=cfg.backoff_max_seconds
                )
                retry_at = utcnow() + timedelta(seconds=delay)
        with self._sessions() as session:
            state = outbox.mark_failed(
                session, claim.delivery_id, attempt=claim.attempt, error=reason, retry_at=retry_at
            )
        log.warning(
            "delivery %d (%s %s) attempt %d failed -> %s: %s",
            claim.delivery_id,
            claim.channel,
            claim.destination,
            claim.attempt,
            state,
            reason,
        )
        return Settled(claim.delivery_id, state, reason)

    def _dispatch(self, ctx: outbox.DeliveryContext) -> dict[str, Any]:
        """Send through the channel; returns a detail for the audit, raises DeliveryError."""
        cfg = self._settings.delivery
        timeout = cfg.ack_timeout
        calling = self._settings.dicom.ae_title
        if ctx.channel == Channel.DICOM:
            if not ctx.result_dir:
                raise RefusedError("no documents were spooled for this result")
            destination = DicomDestination.parse(ctx.destination)
            datasets = dicom_store.load_documents(Path(ctx.result_dir))
            report = dicom_store.send_documents(
                destination,
                datasets,
                calling_aet=calling,
                timeout=timeout,
                tls=self._tls_context() if destination.tls else None,
            )
            return {"objects": len(datasets), **report.as_dict()}
        if ctx.channel == Channel.HL7:
            message = hl7_oru.build_oru(ctx, sending_application=cfg.hl7_sending_application)
            ack = hl7_oru.send_oru(Hl7Destination.parse(ctx.destination), message, timeout=timeout)
            return {"ack": ack, "control_id": hl7_oru.control_id(ctx)}
        if ctx.channel == Channel.WEBHOOK:
            status = webhook.post(
                WebhookDestination.parse(ctx.destination),
                result_payload(ctx),
                secret=cfg.webhook_secret.get_secret_value().encode(),
                delivery_id=ctx.key,
                timeout=timeout,
            )
            return {"http_status": status}
        if ctx.channel == Channel.UPS:
            uid = ups.workitem_uid(ctx)
            code = ups.create_workitem(
                DicomDestination.parse(ctx.destination),
                ups.build_workitem(ctx),
                uid,
                calling_aet=calling,
                timeout=timeout,
            )
            return {"workitem": uid, "status": f"0x{code:04X}"}
        raise RefusedError(f"unknown channel {ctx.channel!r}")

    def _tls_context(self) -> Any:
        if self._tls is None:
            self._tls = dicom_store.tls_context(
                self._settings.delivery.tls_ca,
                self._settings.dicom.tls_cert,
                self._settings.dicom.tls_key,
            )
        return self._tls


class DeliveryLoop:
    """Runs :meth:`DeliveryRunner.run_due` every ``poll_seconds`` until stopped."""

    def __init__(self, runner: DeliveryRunner, poll_seconds: float) -> None:
        self._runner = runner
        self._poll = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._runner.run_due()
            except Exception:
                log.exception("delivery sweep failed; will retry")
            self._stop.wait(self._poll)
