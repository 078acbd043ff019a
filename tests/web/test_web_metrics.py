"""``/metrics`` from the database at scrape time, and health/readiness."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from db.engine import make_engine, make_session_factory
from db.vocabulary import Priority, WebRole
from tests.web.conftest import WebRig, serve
from tests.web.seed import add_study
from triage.settings import Settings


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_what_the_database_holds(web: WebRig) -> None:
    web.seed(lambda s: add_study(s, priority=Priority.CRITICAL, delivered_after_s=40.0))
    web.seed(lambda s: add_study(s))
    web.seed(lambda s: add_study(s, priority=None))
    with web.client(WebRole.AUDITOR) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("triage_studies_received_total", ())] == 3
    assert samples[("triage_studies", (("state", "receiving"),))] == 1
    assert samples[("triage_studies", (("state", "delivered"),))] == 1
    # Results 3 s after the last image; one delivery at 40 s after 2 attempts (1 failed).
    assert samples[("triage_last_image_to_result_seconds_count", ())] == 2
    assert samples[("triage_last_image_to_result_seconds_bucket", (("le", "5.0"),))] == 2
    assert samples[("triage_last_image_to_result_seconds_bucket", (("le", "2.0"),))] == 0
    assert samples[("triage_last_image_to_delivered_seconds_sum", ())] == 40.0
    assert samples[("triage_last_image_to_delivered_seconds_bucket", (("le", "30.0"),))] == 0
    assert samples[("triage_inference_seconds_count", ())] == 2
    failures = ("triage_delivery_failures_total",
                (("channel", "sr"), ("destination", "PACS@127.0.0.1:104")))  # fmt: skip
    assert samples[failures] == 1
    info = [k for k in samples if k[0] == "triage_bundle_info"]
    assert dict(info[0][1])["sha256"] == "ab" * 32 and dict(info[0][1])["role"] == "deployed"


def test_health_and_readiness_without_credentials(web: WebRig) -> None:
    with web.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True
    assert set(body["checks"]) == {"database", "broker", "spool"}
    assert "MiB free" in body["checks"]["spool"]["detail"]


def test_not_ready_when_the_spool_disk_is_nearly_full(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_url=database_url, web_min_free_mb=10**9)
    engine = make_engine(database_url)
    server, url = serve(settings, make_session_factory(engine))
    try:
        response = httpx.get(f"{url}/readyz")
    finally:
        server.should_exit = True
        engine.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False
    assert body["checks"]["spool"]["ok"] is False and body["checks"]["database"]["ok"] is True
