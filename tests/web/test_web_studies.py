"""The study API: order, filters, one study in full, bundles, and exactly one access row
per read of patient data (against a real uvicorn server and both databases)."""

from __future__ import annotations

import json
from datetime import timedelta

from db.models import utcnow
from db.vocabulary import AuditEventType, Priority, WebRole
from tests.web.conftest import WebRig
from tests.web.seed import CLASSES, add_study
from tests.web.signin import form_csrf, sign_in


def _probs(**high: float) -> dict[str, float]:
    return {**dict.fromkeys(CLASSES, 0.05), **high}


def _seed_mix(web: WebRig) -> dict[str, int]:
    now = utcnow()

    def build(s):  # type: ignore[no-untyped-def]
        return {
            "routine_old": add_study(s, received=now - timedelta(hours=3)).id,
            "pending": add_study(s, received=now - timedelta(hours=4), priority=None).id,
            "urgent": add_study(
                s, received=now - timedelta(hours=1), priority=Priority.URGENT,
                probabilities=_probs(ischemic=0.6), calling_aet="CT2",
            ).id,
            "critical_new": add_study(
                s, received=now - timedelta(minutes=5), priority=Priority.CRITICAL,
                probabilities=_probs(any=0.9, subdural=0.8), delivered_after_s=8.0,
            ).id,
            "critical_old": add_study(
                s, received=now - timedelta(hours=2), priority=Priority.CRITICAL,
                probabilities=_probs(any=0.7, epidural=0.6), bundle_version="0.0.9",
            ).id,
            "not_assessed": add_study(
                s, received=now - timedelta(hours=5), priority=Priority.NOT_ASSESSED,
                assessed=False, in_domain=False, reasons=["contrast-enhanced study"],
            ).id,
            "routine_new": add_study(s, received=now - timedelta(minutes=30)).id,
        }  # fmt: skip

    return web.seed(build)


def test_studies_come_by_priority_then_arrival(web: WebRig) -> None:
    ids = _seed_mix(web)
    with web.client(WebRole.RADIOLOGIST) as client:
        page = client.get("/api/studies").json()
    order = [item["id"] for item in page["items"]]
    assert order == [
        ids["critical_old"], ids["critical_new"], ids["urgent"], ids["routine_old"],
        ids["routine_new"], ids["not_assessed"], ids["pending"],
    ]  # fmt: skip
    assert page["total"] == 7
    first = page["items"][0]["result"]
    assert first["priority"] == "critical" and first["flags"]["epidural"] is True
    assert "synthetic demo — not for clinical use" in first["label"]
    assert "sha256 " + "ab" * 32 in first["label"]
    not_assessed = page["items"][5]["result"]
    assert not_assessed["priority"] == "not_assessed" and not_assessed["in_domain"] is False


def test_filters_and_pages(web: WebRig) -> None:
    ids = _seed_mix(web)
    now = utcnow()
    with web.client(WebRole.AUDITOR) as client:

        def found(**params: object) -> list[int]:
            response = client.get("/api/studies", params=params)
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()["items"]]

        assert found(finding="subdural") == [ids["critical_new"]]
        assert set(found(finding="any", min_probability=0.65)) == {
            ids["critical_old"], ids["critical_new"]
        }  # fmt: skip
        assert found(delivered=True) == [ids["critical_new"]]
        assert ids["critical_new"] not in found(delivered=False)
        assert found(assessed=False) == [ids["not_assessed"]]
        assert found(calling_aet="CT2") == [ids["urgent"]]
        assert found(bundle_version="0.0.9") == [ids["critical_old"]]
        assert found(priority=["urgent", "not_assessed"]) == [ids["urgent"], ids["not_assessed"]]
        assert found(state="receiving") == [ids["pending"]]
        recent = found(received_from=(now - timedelta(minutes=45)).isoformat())
        assert recent == [ids["critical_new"], ids["routine_new"]]
        assert len(found(limit=2, offset=2)) == 2
        assert found(limit=2, offset=2) == found()[2:4]
        assert client.get("/api/studies", params={"min_probability": 0.5}).status_code == 422
        assert client.get("/api/studies", params={"finding": "Robert'); DROP"}).status_code == 422


def test_one_study_in_full(web: WebRig) -> None:
    study_id = web.seed(
        lambda s: add_study(
            s, priority=Priority.CRITICAL, probabilities=_probs(any=0.9),
            delivered_after_s=12.5, shadow_priority=Priority.URGENT,
        ).id
    )  # fmt: skip
    with web.client(WebRole.RADIOLOGIST) as client:
        study = client.get(f"/api/studies/{study_id}").json()
        assert client.get("/api/studies/999999").status_code == 404
    assert study["result"]["probabilities"]["any"] == 0.9
    assert len(study["result"]["slice_scores"]) == 20
    assert study["result"]["shadow"] is False
    assert [r["priority"] for r in study["shadow_results"]] == ["urgent"]
    assert study["shadow_results"][0]["bundle_name"] == "candidate"
    assert study["series"][0]["read"] is True
    assert study["deliveries"][0]["attempts"] == 2
    assert study["deliveries"][0]["state"] == "sent"
    assert study["timings"] == {"last_image_to_result_s": 3.0, "last_image_to_delivered_s": 12.5}


def test_every_read_of_patient_data_leaves_exactly_one_audit_row(web: WebRig) -> None:
    study = web.seed(lambda s: add_study(s, priority=Priority.URGENT))
    reads = [
        (WebRole.RADIOLOGIST, "GET", "/api/studies", AuditEventType.WORKLIST_VIEWED),
        (WebRole.AUDITOR, "GET", f"/api/studies/{study.id}", AuditEventType.STUDY_VIEWED),
        (WebRole.RADIOLOGIST, "POST", f"/api/studies/{study.id}/acknowledge",
         AuditEventType.STUDY_ACKNOWLEDGED),
        (WebRole.AUDITOR, "GET", "/api/audit", AuditEventType.AUDIT_LOG_VIEWED),
        (WebRole.ADMIN, "GET", "/api/audit/export", AuditEventType.AUDIT_LOG_VIEWED),
    ]  # fmt: skip
    for role, method, path, expected in reads:
        before = max([e.id for e in web.audit_rows()], default=0)
        with web.client(role) as client:
            assert client.request(method, path).status_code == 200, path
        rows = web.audit_rows(before)
        assert [r.event_type for r in rows] == [expected], path
        row = rows[0]
        assert row.actor == f"web:{role.value}-user"
        assert row.detail["role"] == role.value
        assert row.detail["address"] == "127.0.0.1"
        assert row.detail["action"]
        if expected in (AuditEventType.STUDY_VIEWED, AuditEventType.STUDY_ACKNOWLEDGED):
            assert row.study_instance_uid == study.study_instance_uid
        if expected == AuditEventType.WORKLIST_VIEWED:
            assert row.detail["studies"] == [study.study_instance_uid]
    # Figures without patient data are not access-logged.
    before = web.audit_count()
    with web.client(WebRole.RADIOLOGIST) as client:
        for path in ("/api/bundles", "/metrics", "/healthz", "/api/me"):
            assert client.get(path).status_code == 200, path
    assert web.audit_count() == before


def test_pages_log_their_reads_and_acknowledge_round_trip(web: WebRig) -> None:
    study = web.seed(lambda s: add_study(s, priority=Priority.CRITICAL))
    with web.client() as browser:
        sign_in(browser, web.tokens[WebRole.RADIOLOGIST])
        before = web.audit_count()
        page = browser.get("/worklist")
        assert web.audit_count() == before + 1
        assert "synthetic demo — not for clinical use" in page.text
        assert browser.get(f"/studies/{study.id}").status_code == 200
        assert web.audit_count() == before + 2
        acked = browser.post(
            f"/worklist/{study.id}/acknowledge", data={"csrf_token": form_csrf(page.text)}
        )
        assert acked.status_code == 303
        assert "acknowledged by radiologist-user" in browser.get("/worklist").text
    events = [e.event_type for e in web.audit_rows()][-2:]
    assert events == [AuditEventType.STUDY_ACKNOWLEDGED, AuditEventType.WORKLIST_VIEWED]


def test_audit_log_pages_and_json_lines(web: WebRig) -> None:
    web.seed(lambda s: add_study(s))
    with web.client(WebRole.RADIOLOGIST) as radiologist:
        for _ in range(3):
            radiologist.get("/api/studies")
    with web.client(WebRole.AUDITOR) as auditor:
        first = auditor.get("/api/audit", params={"event_type": "worklist_viewed", "limit": 2})
        body = first.json()
        assert [i["event_type"] for i in body["items"]] == ["worklist_viewed"] * 2
        rest = auditor.get(
            "/api/audit",
            params={"event_type": "worklist_viewed", "after_id": body["next_after_id"]},
        ).json()
        assert len(rest["items"]) == 1 and rest["next_after_id"] is None
        export = auditor.get("/api/audit/export")
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = export.text.strip().split("\n")
    parsed = [json.loads(line) for line in lines]
    assert {"id", "at", "event_type", "actor", "detail"} <= set(parsed[0])
    assert sum(p["event_type"] == "worklist_viewed" for p in parsed) == 3
