"""Who may read what: tokens, sessions, roles, revocation, CSRF, the sign-in slowdown and
the response headers, against a real uvicorn server."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from db.engine import make_engine, make_session_factory
from db.models import utcnow
from db.users import add_user, revoke_user
from db.vocabulary import AuditEventType, WebRole
from tests.web.conftest import WebRig, serve
from tests.web.seed import add_study
from tests.web.signin import form_csrf, sign_in
from triage.settings import Settings
from triage.web import auth
from triage.web.auth import SESSION_COOKIE

PATIENT_DATA = ["/api/studies", "/api/studies/1", "/api/audit", "/api/audit/export", "/metrics"]


def test_nothing_with_patient_data_answers_without_a_token(web: WebRig) -> None:
    web.seed(lambda s: add_study(s))
    with web.client() as anonymous:
        for path in PATIENT_DATA:
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            assert "1.2." not in response.text  # no UID leaks in the refusal
        assert anonymous.get("/worklist", follow_redirects=False).headers["location"] == "/signin"
    with web.client(headers={"Authorization": "Bearer not-a-token"}) as wrong:
        assert wrong.get("/api/studies").status_code == 401
    with web.client(headers={"Authorization": "Basic abc"}) as basic:
        assert basic.get("/api/studies").status_code == 401


def test_role_limits(web: WebRig) -> None:
    study = web.seed(lambda s: add_study(s))
    with web.client(WebRole.RADIOLOGIST) as radiologist:
        assert radiologist.get("/api/studies").status_code == 200
        assert radiologist.get("/api/audit").status_code == 403
        assert radiologist.get("/api/audit/export").status_code == 403
        assert radiologist.post(f"/api/studies/{study.id}/acknowledge").status_code == 200
    with web.client(WebRole.AUDITOR) as auditor:
        assert auditor.get("/api/audit").status_code == 200
        assert auditor.post(f"/api/studies/{study.id}/acknowledge").status_code == 403
    with web.client(WebRole.ADMIN) as admin:
        assert admin.get("/api/audit").status_code == 200
        assert admin.get("/api/me").json() == {"name": "admin-user", "role": "admin"}


def test_a_revoked_token_and_its_sessions_are_refused(web: WebRig) -> None:
    with web.client(WebRole.RADIOLOGIST) as api, web.client() as browser:
        assert api.get("/api/studies").status_code == 200
        assert sign_in(browser, web.tokens[WebRole.RADIOLOGIST]).status_code == 303
        assert browser.get("/worklist").status_code == 200
        web.seed(lambda s: revoke_user(s, "radiologist-user"))
        assert api.get("/api/studies").status_code == 401
        assert browser.get("/worklist", follow_redirects=False).status_code == 303
        assert browser.get("/api/studies").status_code == 401


def test_session_cookie_is_httponly_and_samesite_strict(web: WebRig) -> None:
    with web.client() as browser:
        response = sign_in(browser, web.tokens[WebRole.RADIOLOGIST])
    assert response.status_code == 303 and response.headers["location"] == "/worklist"
    cookie = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; Secure when TLS is configured


def test_state_changes_by_session_need_the_csrf_token(web: WebRig) -> None:
    study = web.seed(lambda s: add_study(s))
    with web.client() as browser:
        sign_in(browser, web.tokens[WebRole.RADIOLOGIST])
        page = browser.get("/worklist")
        csrf = form_csrf(page.text)
        before = web.audit_count()
        # Without the token, with a wrong one: refused and nothing recorded.
        assert browser.post(f"/api/studies/{study.id}/acknowledge").status_code == 403
        wrong = {"X-CSRF-Token": "x" * 43}
        assert (
            browser.post(f"/api/studies/{study.id}/acknowledge", headers=wrong).status_code == 403
        )
        form = browser.post(f"/worklist/{study.id}/acknowledge", data={"csrf_token": "nope"})
        assert form.status_code == 403
        assert browser.post("/signout", data={}).status_code == 403
        assert web.audit_count() == before
        ok = browser.post(f"/api/studies/{study.id}/acknowledge", headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["acknowledged_by"] == "radiologist-user"
        assert web.audit_count() == before + 1


def test_sign_in_form_without_its_csrf_cookie_is_refused(web: WebRig) -> None:
    with web.client() as browser:
        page = browser.get("/signin")
        csrf = form_csrf(page.text)
    with web.client() as other:  # no cookie from the form: a cross-site post
        response = other.post(
            "/signin", data={"token": web.tokens[WebRole.ADMIN], "csrf_token": csrf}
        )
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.cookies


def test_repeated_failed_sign_ins_are_slowed_down(
    web: WebRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 s instead of 1 s for the first wait, so a slow shared test machine keeps the margins.
    monkeypatch.setattr(auth, "FIRST_WAIT_SECONDS", 2.0)
    with web.client() as browser:
        for _ in range(3):  # the first failures cost nothing
            assert sign_in(browser, "wrong-token").status_code == 401
        # Now even the right token must wait: it is not even checked.
        refused = sign_in(browser, web.tokens[WebRole.RADIOLOGIST])
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        time.sleep(2.1)
        assert sign_in(browser, "wrong-again").status_code == 401  # 4th failure: waits 4 s
        time.sleep(0.2)
        assert sign_in(browser, web.tokens[WebRole.RADIOLOGIST]).status_code == 429
        time.sleep(4.1)
        assert sign_in(browser, web.tokens[WebRole.RADIOLOGIST]).status_code == 303
    events = [e.event_type for e in web.audit_rows()]
    assert events.count(AuditEventType.SIGN_IN_FAILED) == 4
    assert events.count(AuditEventType.USER_SIGNED_IN) == 1


def test_sign_in_wait_doubles_after_the_free_failures() -> None:
    newest = utcnow()
    assert auth.sign_in_wait(2, newest, newest) == 0.0
    assert auth.sign_in_wait(3, newest, newest) == 1.0
    assert auth.sign_in_wait(5, newest, newest) == 4.0
    assert auth.sign_in_wait(5, newest, newest + timedelta(seconds=3)) == 1.0
    assert auth.sign_in_wait(40, newest, newest) == auth.MAX_WAIT_SECONDS


def test_security_headers_on_pages_api_and_assets(web: WebRig) -> None:
    with web.client(WebRole.RADIOLOGIST) as client:
        for path in ("/signin", "/api/studies", "/static/app.css", "/healthz", "/nowhere"):
            headers = client.get(path).headers
            assert "default-src 'self'" in headers["content-security-policy"], path
            assert "frame-ancestors 'none'" in headers["content-security-policy"], path
            assert headers["x-frame-options"] == "DENY", path
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["referrer-policy"] == "no-referrer", path
        assert client.get("/api/studies").headers["cache-control"] == "no-store"


def test_https_when_a_certificate_is_configured(
    database_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    settings = make_settings(database_url=database_url, web_tls_cert=cert, web_tls_key=key)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        _, token = add_user(session, "tls-user", WebRole.RADIOLOGIST)
        session.commit()
    server, url = serve(settings, sessions)
    try:
        https = url.replace("http://", "https://")
        with httpx.Client(
            base_url=https, verify=ssl.create_default_context(cafile=str(cert)), timeout=10
        ) as browser:
            response = sign_in(browser, token)
            assert response.status_code == 303
            cookie = next(
                h for h in response.headers.get_list("set-cookie")
                if h.startswith(SESSION_COOKIE)
            )  # fmt: skip
            assert "Secure" in cookie and "HttpOnly" in cookie
            assert "max-age" in response.headers["strict-transport-security"]
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the same port
            httpx.get(f"{url}/healthz", timeout=5).raise_for_status()
    finally:
        server.should_exit = True
        engine.dispose()
