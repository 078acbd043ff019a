"""The worklist in a real browser: headless Chromium (Debian's) driven by Selenium against a
real uvicorn server. Screenshots go to ``var/test-artifacts/`` for a person to look at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from db.models import utcnow
from db.vocabulary import AuditEventType, Priority, WebRole
from tests.web.conftest import WebRig
from tests.web.seed import CLASSES, add_study

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM and CHROMEDRIVER, "chromium and chromium-driver: .ci/ensure-system.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1000"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _probs(**high: float) -> dict[str, float]:
    return {**dict.fromkeys(CLASSES, 0.04), **high}


def _row_ids(driver: WebDriver) -> list[int]:
    # Read in one script: the live update may swap the rows between two WebDriver calls.
    ids = driver.execute_script(
        "return [...document.querySelectorAll('#worklist-rows tr.study')]"
        ".map(r => Number(r.dataset.studyId));"
    )
    return [int(i) for i in ids]


def _row_text(driver: WebDriver, study_id: int) -> str:
    text = driver.execute_script(
        "const r = document.querySelector(`#worklist-rows tr[data-study-id='${arguments[0]}']`);"
        "return r ? r.innerText : '';",
        study_id,
    )
    return str(text)


def test_worklist_in_a_real_browser(web: WebRig, browser: WebDriver) -> None:
    now = utcnow()
    ids = web.seed(
        lambda s: {
            "routine": add_study(s, received=now - timedelta(minutes=50)).id,
            "critical": add_study(
                s, received=now - timedelta(minutes=20), priority=Priority.CRITICAL,
                probabilities=_probs(any=0.93, subdural=0.88),
            ).id,
            "urgent": add_study(
                s, received=now - timedelta(minutes=40), priority=Priority.URGENT,
                probabilities=_probs(ischemic=0.61),
            ).id,
            "out_of_domain": add_study(
                s, received=now - timedelta(minutes=70), priority=Priority.NOT_ASSESSED,
                assessed=False, in_domain=False, reasons=["contrast-enhanced study"],
            ).id,
            "pending": add_study(s, received=now - timedelta(minutes=2), priority=None).id,
        }
    )  # fmt: skip
    wait = WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))

    # Sign in.
    browser.get(f"{web.url}/worklist")
    assert browser.current_url.endswith("/signin")
    browser.save_screenshot(str(ARTIFACTS / "worklist-1-signin.png"))
    browser.find_element(By.ID, "token").send_keys(web.tokens[WebRole.RADIOLOGIST])
    browser.find_element(By.ID, "signin").click()
    wait.until(lambda d: d.current_url.endswith("/worklist"))

    # Order: critical, urgent, routine, not assessed, awaiting a result.
    expected = [ids["critical"], ids["urgent"], ids["routine"], ids["out_of_domain"],
                ids["pending"]]  # fmt: skip
    assert _row_ids(browser) == expected
    first = _row_text(browser, ids["critical"])
    assert "CRITICAL" in first and "subdural 0.88" in first
    assert "synthetic demo — not for clinical use" in first
    curve = f'tr[data-study-id="{ids["critical"]}"] svg.curve'
    assert browser.find_elements(By.CSS_SELECTOR, curve)
    ood = _row_text(browser, ids["out_of_domain"])
    assert "OUT OF DOMAIN" in ood and "ROUTINE" not in ood
    assert "contrast-enhanced study" in ood
    wait.until(
        lambda d: "on" in (d.find_element(By.ID, "live-status").get_attribute("class") or "")
    )
    browser.save_screenshot(str(ARTIFACTS / "worklist-2-signed-in.png"))

    # A new study appears live, in its place, without a reload.
    browser.execute_script("window.__notReloaded = true;")
    new_id = web.seed(
        lambda s: add_study(
            s, received=utcnow(), priority=Priority.CRITICAL,
            probabilities=_probs(any=0.97, epidural=0.91),
        ).id
    )  # fmt: skip
    wait.until(lambda d: new_id in _row_ids(d))
    assert browser.execute_script("return window.__notReloaded === true;")
    assert _row_ids(browser) == [ids["critical"], new_id, *expected[1:]]
    browser.save_screenshot(str(ARTIFACTS / "worklist-3-live-update.png"))

    # Acknowledge the first study: the round trip shows who acknowledged it, and is audited.
    before = web.audit_count()
    first = browser.find_element(By.CSS_SELECTOR, "#worklist-rows tr.study")
    first.find_element(By.CSS_SELECTOR, "button.ack-button").click()
    wait.until(
        lambda d: (
            "acknowledged by radiologist-user"
            in d.find_element(By.CSS_SELECTOR, "#worklist-rows tr.study").text
        )
    )
    events = [e.event_type for e in web.audit_rows()][before:]
    assert events.count(AuditEventType.STUDY_ACKNOWLEDGED) == 1
    browser.save_screenshot(str(ARTIFACTS / "worklist-4-acknowledged.png"))

    # One study in full.
    link = f'tr[data-study-id="{new_id}"] .study-id a'
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, link).click() or True)
    wait.until(lambda d: "/studies/" in d.current_url)
    assert "epidural" in browser.page_source and "weights sha256" in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "worklist-5-study.png"))

    # The radiologist's session is refused on the audit log.
    browser.get(f"{web.url}/api/audit")
    assert "may not" in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(ARTIFACTS / "worklist-6-audit-refused.png"))
