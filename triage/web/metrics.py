"""``GET /metrics``: Prometheus figures computed from the database at scrape time.

Why from the database and not from in-process counters: the listener, the workers and
this app are separate processes, often on separate hosts and restarted independently.
In-process counters would be split across them and reset at every restart; the database
already records every instance, study, job, result and delivery, so one scrape of any
web app sees the whole system. A histogram built at scrape time from every stored result
is still cumulative (rows are only ever added), which is what Prometheus' ``rate`` needs.
The cost grows with the results stored; for very large sites a Prometheus scrape
interval of a minute keeps it small. Accepted associations are not stored and are not
reported (rejected ones are, from the audit log).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from db.metrics_queries import MetricsSnapshot, snapshot
from db.models import utcnow
from db.vocabulary import JobState, StudyState
from triage.web.auth import Reader
from triage.web.routes_studies import AUTH_RESPONSES

router = APIRouter(tags=["metrics"])

INFERENCE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
LATENCY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
QUEUE_STATES = (StudyState.COMPLETE, StudyState.QUEUED)


def histogram(
    name: str, documentation: str, values: Sequence[float], buckets: Sequence[float]
) -> HistogramMetricFamily:
    """A Prometheus histogram (cumulative buckets, sum, count) over ``values``."""
    counts = [(str(bound), sum(1 for v in values if v <= bound)) for bound in buckets]
    counts.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, documentation, buckets=counts, sum_value=sum(values))


def families(snap: MetricsSnapshot) -> Iterator[Metric]:
    """Every metric family of one snapshot."""
    yield CounterMetricFamily(
        "triage_instances_received", "DICOM instances received and recorded", value=snap.instances
    )
    yield CounterMetricFamily(
        "triage_studies_received", "Studies received (distinct Study Instance UIDs)",
        value=snap.studies,
    )  # fmt: skip
    yield CounterMetricFamily(
        "triage_associations_rejected",
        "Associations refused (calling AE not allowed and the like), from the audit log",
        value=snap.associations_rejected,
    )
    studies = GaugeMetricFamily("triage_studies", "Studies by state", labels=["state"])
    for state in StudyState:
        studies.add_metric([state.value], snap.studies_by_state.get(state, 0))
    yield studies
    yield GaugeMetricFamily(
        "triage_queue_depth",
        "Studies complete or queued and waiting for a worker (the database's view of the queue)",
        value=sum(snap.studies_by_state.get(s, 0) for s in QUEUE_STATES),
    )
    jobs = GaugeMetricFamily("triage_jobs", "Inference jobs by state", labels=["state"])
    for job_state in JobState:
        jobs.add_metric([job_state.value], snap.jobs_by_state.get(job_state, 0))
    yield jobs
    yield histogram(
        "triage_inference_seconds", "Model time per study (deployed bundle)",
        snap.inference_seconds, INFERENCE_BUCKETS,
    )  # fmt: skip
    yield histogram(
        "triage_last_image_to_result_seconds", "Last image received -> result stored",
        snap.to_result_seconds, LATENCY_BUCKETS,
    )  # fmt: skip
    yield histogram(
        "triage_last_image_to_delivered_seconds", "Last image received -> result delivered",
        snap.to_delivered_seconds, LATENCY_BUCKETS,
    )  # fmt: skip
    failures = CounterMetricFamily(
        "triage_delivery_failures", "Failed delivery attempts by destination",
        labels=["channel", "destination"],
    )  # fmt: skip
    for (channel, destination), count in sorted(snap.delivery_failures.items()):
        failures.add_metric([channel, destination], count)
    yield failures
    age = GaugeMetricFamily(
        "triage_worker_last_result_age_seconds",
        "Seconds since a worker last finished a job (worker health; absent before the first)",
    )
    if snap.last_job_finished_at is not None:
        age.add_metric([], (utcnow() - snap.last_job_finished_at).total_seconds())
    yield age
    yield GaugeMetricFamily(
        "triage_worker_jobs_running", "Jobs a worker holds now (worker health)",
        value=snap.jobs_by_state.get(JobState.RUNNING, 0),
    )  # fmt: skip
    bundle = InfoMetricFamily(
        "triage_bundle", "Model bundle of the newest result (deployed and shadow)",
        labels=["role"],
    )  # fmt: skip
    for b in snap.bundles_in_use:
        bundle.add_metric(
            ["shadow" if b["shadow"] else "deployed"],
            {"name": b["name"], "version": b["version"], "sha256": b["sha256"],
             "synthetic_demo": str(bool(b["synthetic_demo"])).lower()},
        )  # fmt: skip
    yield bundle


class DatabaseCollector(Collector):
    """A collector that reads one :class:`MetricsSnapshot` per scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        with self._sessions() as session:
            snap = snapshot(session)
        yield from families(snap)


def make_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding the database collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(sessions))
    return registry


@router.get(
    "/metrics",
    responses={**AUTH_RESPONSES, 200: {"content": {"text/plain": {}}}},
    response_class=Response,
)
def metrics(request: Request, principal: Reader) -> Response:
    """Prometheus text format; scrape with ``authorization: {credentials: TOKEN}``."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    del principal  # any role may read these figures: they hold no patient data
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
