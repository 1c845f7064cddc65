"""The web dashboard in a real headless Chromium (issue 16), hermetic.

The service is the real app (:func:`patchpilot.api.create_app` plus
:func:`patchpilot.web.install`) on a real SQLite store, served by uvicorn in a thread on a free
loopback port; users and their passwords are real (argon2); the approval's run is a real run
graph over the scripted fleet of :mod:`tests.fakes` (the in-test executor of
tests/unit/test_api.py). The browser is Debian's chromium through the system chromedriver
(:mod:`tests.browser`). Screenshots go to the test's temporary directory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from patchpilot.app import users
from patchpilot.core.audit import AUDIT_FILE, read_events
from patchpilot.core.models import (
    Finding,
    FixState,
    RiskAssessment,
    RiskFactor,
    Severity,
    SSVCOutcome,
    utcnow,
)
from patchpilot.core.store import Store, finding_key
from tests.browser import (
    WAIT,
    browser_cookies,
    has_element,
    live_server,
    login,
    path_of,
    run_status,
    screenshot,
    submit_and_wait,
    wait_until,
)
from tests.unit.test_api import HOSTS, World

PASSWORDS = {
    "vera": "vera-viewer-password",
    "otto": "otto-operator-password",
    "anna": "anna-approver-password",
}
SCRIPT = "<script>window.__pwned = 1</script>"
ADVISORY = f"DSA-9999-1 {SCRIPT}"
IMG = '<img src=x onerror="window.__pwned = 2">'
RISK_RUN = "20260102T000000Z-b16b16"


@dataclass
class Dashboard:
    """The served app (``world``: store, users, executor, tokens) and its base URL."""

    world: World
    base: str

    def client(self, driver: WebDriver | None = None) -> httpx.Client:
        """An HTTP client for the service, with the browser's cookies (its session) if given."""
        cookies = browser_cookies(driver) if driver is not None else None
        return httpx.Client(
            base_url=self.base, cookies=cookies, timeout=120, follow_redirects=False
        )

    def api_run(self, run_id: str) -> dict[str, object]:
        with self.client() as client:
            response = client.get(f"/api/v1/runs/{run_id}", headers=self.world.auth("vera"))
        assert response.status_code == 200, response.text
        document: dict[str, object] = response.json()
        return document


def _hostile_scan(store: Store) -> None:
    """A scan of web-1 whose finding's advisory text and risk rationale hold markup."""
    started = utcnow() + timedelta(seconds=1)
    store.create_run(RISK_RUN, kind="scan", target="all", params={}, started_at=started)
    finding = Finding(
        host="web-1",
        source_package="openssl",
        binary_packages=("openssl", "libssl3"),
        installed_source_version="3.0.15-1~deb12u1",
        advisory_id=ADVISORY,
        cves=("CVE-2026-0001",),
        fix=FixState.fixed("3.0.16-1~deb12u1"),
        fix_reachable=True,
        severity=Severity.HIGH,
        first_seen=started,
    )
    store.replace_findings(RISK_RUN, "web-1", [finding])
    store.save_risk(
        RISK_RUN,
        [
            RiskAssessment(
                finding_key=finding_key(finding),
                score=61.0,
                factors=(
                    RiskFactor(
                        name="exploit", value=IMG, known=True, weight=1.0, contribution=10.0
                    ),
                ),
                ssvc=SSVCOutcome.ATTEND,
                due_date=(started + timedelta(days=7)).date(),
                rationale=f"high severity {IMG} {SCRIPT}",
            )
        ],
    )
    store.finish_run(RISK_RUN, status="completed", summary={"findings": 1})


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    """The service with the dashboard, its users with passwords, a hostile finding; served."""
    from patchpilot.web import install

    world = World(tmp_path / "home")
    try:
        for name, password in PASSWORDS.items():
            users.set_password(world.store, name, password, actor="admin")
        _hostile_scan(world.store)
        if not any(getattr(route, "path", None) == "/login" for route in world.app.routes):
            install(world.app)
        with live_server(world.app) as base:
            yield Dashboard(world, base)
    finally:
        world.client.close()
        world.store.close()


def _h1(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "h1").text)


def _body(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def _logout(driver: WebDriver) -> None:
    submit_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/logout']"))
    assert path_of(driver) == "/login"


def _page_csrf(driver: WebDriver) -> str:
    """The session's CSRF token, from a hidden field of the page (the logout form has one)."""
    token = driver.find_element(By.CSS_SELECTOR, "input[name=csrf_token]").get_attribute("value")
    assert token, "the page has no csrf_token field"
    return token


# --------------------------------------------------------------------------- tests


def test_login_shows_the_fleet_and_logout_ends_the_session(
    browser: WebDriver, dashboard: Dashboard, tmp_path: Path
) -> None:
    base = dashboard.base
    browser.get(f"{base}/")
    assert path_of(browser) == "/login"  # not logged in: the login form
    login(browser, base, "vera", PASSWORDS["vera"])
    assert path_of(browser) == "/"
    body = _body(browser)
    for host in HOSTS:
        assert host.name in body
    assert "vera" in body  # who is logged in
    assert browser.execute_script("return window.__pwned") is None
    screenshot(browser, tmp_path, "fleet")
    cookies = browser_cookies(browser)
    assert "pp_session" in cookies
    with dashboard.client(browser) as client:
        assert client.get("/").status_code == 200  # the browser's session works over HTTP

    _logout(browser)
    browser.get(f"{base}/findings")
    assert path_of(browser) == "/login"
    with httpx.Client(base_url=base, cookies=cookies, follow_redirects=False) as client:
        stale = client.get("/")  # the old cookie no longer opens a page
    assert stale.status_code == 303
    assert stale.headers["location"].startswith("/login")


def test_a_finding_with_script_in_its_advisory_text_renders_inert(
    browser: WebDriver, dashboard: Dashboard, tmp_path: Path
) -> None:
    login(browser, dashboard.base, "vera", PASSWORDS["vera"])
    browser.get(f"{dashboard.base}/findings")
    wait_until(browser, lambda d: "web-1" in _body(d), what="the findings of web-1")
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    body = _body(browser)
    assert SCRIPT in body  # shown literally, as text
    assert browser.execute_script("return window.__pwned") is None  # never ran
    sources = browser.execute_script("return Array.from(document.scripts).map(s => s.src)")
    assert sources, "the page loads its own script"
    assert all(s.startswith(f"{dashboard.base}/static/") for s in sources), sources
    assert not has_element(browser, "img[onerror]")
    assert not has_element(browser, "img[src=x]")
    screenshot(browser, tmp_path, "findings")


def test_a_form_posted_without_its_csrf_token_is_refused(
    browser: WebDriver, dashboard: Dashboard
) -> None:
    login(browser, dashboard.base, "otto", PASSWORDS["otto"])
    # the logout form, its hidden csrf_token removed by script: refused, still logged in
    browser.execute_script(
        "document.querySelectorAll(\"form[action='/logout'] input[name=csrf_token]\")"
        ".forEach(e => e.remove())"
    )
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/logout']"))
    assert "403" in _h1(browser)
    browser.get(f"{dashboard.base}/")
    assert path_of(browser) == "/"
    # the same with the browser's cookies over HTTP: without or with a wrong token, 403
    with dashboard.client(browser) as client:
        assert client.post("/logout", data={}).status_code == 403
        assert client.post("/logout", data={"csrf_token": "x" * 43}).status_code == 403
        assert client.get("/").status_code == 200
        token = _page_csrf(browser)
        assert client.post("/logout", data={"csrf_token": token}).status_code == 303
        assert client.get("/").status_code == 303  # that one ended the session


@pytest.fixture
def go_on(dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """As the service's executor, the run goes on in the background after a decision: here
    once the test sets the event. The background work ends before the service stops."""
    event, workers = threading.Event(), []
    continue_now = dashboard.world.executor.continue_run

    def continue_later(run_id: str, *, actor: str) -> None:
        def work() -> None:
            event.wait(WAIT)
            continue_now(run_id, actor=actor)

        workers.append(threading.Thread(target=work, name="continue-later"))
        workers[-1].start()

    monkeypatch.setattr(dashboard.world.executor, "continue_run", continue_later)
    yield event
    event.set()
    for worker in workers:
        worker.join(WAIT)


def test_the_approver_approves_in_the_browser_and_the_requester_cannot(
    browser: WebDriver, dashboard: Dashboard, go_on: threading.Event, tmp_path: Path
) -> None:
    base, world = dashboard.base, dashboard.world
    with dashboard.client() as client:
        created = client.post(
            "/api/v1/runs", json={"only": ["acme-web=1.1.0"]}, headers=world.auth("otto")
        )
    assert created.status_code == 202, created.text
    run_id = created.json()["run_id"]
    assert dashboard.api_run(run_id)["status"] == "awaiting_approval"
    page, approve = f"/approvals/{run_id}", f"/approvals/{run_id}/approve"

    # the requester: the page without the approve form; his forged POST is refused
    login(browser, base, "otto", PASSWORDS["otto"])
    browser.get(base + page)
    assert run_id in _body(browser)
    assert not has_element(browser, f"form[action='{approve}']")
    assert not has_element(browser, f"form[action='{approve}'] button")
    with dashboard.client(browser) as client:
        forged = client.post(approve, data={"csrf_token": _page_csrf(browser), "comment": "me"})
    assert forged.status_code == 403, forged.text
    assert dashboard.api_run(run_id)["status"] == "awaiting_approval"
    _logout(browser)

    # the approver: reads the plan, approves with a comment, lands on the run page
    login(browser, base, "anna", PASSWORDS["anna"])
    browser.get(base + page)
    assert "acme-web" in _body(browser)
    changes = browser.find_elements(
        By.XPATH,
        "//*[self::tr or self::li or self::article][contains(., 'web-1') and contains(., '1.0.0')"
        " and contains(., '1.1.0')]",
    )
    assert changes, "the plan shows web-1 going from acme-web 1.0.0 to 1.1.0"
    screenshot(browser, tmp_path, "approval")
    with dashboard.client(browser) as client:  # her session, no token: refused
        assert client.post(approve, data={"comment": "no token"}).status_code == 403
    assert dashboard.api_run(run_id)["status"] == "awaiting_approval"
    form = browser.find_element(By.CSS_SELECTOR, f"form[action='{approve}']")
    form.find_element(By.NAME, "comment").send_keys(f"canary first {SCRIPT}")
    submit_and_wait(browser, form)
    assert path_of(browser) == f"/runs/{run_id}"

    # the run has not gone on yet; the page updates itself (no reload) once it does
    assert run_status(browser) == "awaiting_approval"
    browser.execute_script("window.__pp_same_page = true")
    go_on.set()
    wait_until(
        browser,
        lambda d: run_status(d) not in {"awaiting_approval", "queued", "running", "pending"},
        what=f"run {run_id} to end on its page",
    )
    assert run_status(browser) == "completed"
    assert browser.execute_script("return window.__pp_same_page") is True  # live, not reloaded
    browser.refresh()
    assert f"canary first {SCRIPT}" in _body(browser)  # the comment, shown as text
    assert browser.execute_script("return window.__pwned") is None
    screenshot(browser, tmp_path, "run")
    assert dashboard.api_run(run_id)["status"] == "completed"
    granted = [
        e
        for e in read_events(world.settings.home / AUDIT_FILE, run_id=run_id)
        if e.action == "approval.granted"
    ]
    assert [(e.actor, e.details.get("comment")) for e in granted] == [
        ("anna", f"canary first {SCRIPT}")
    ]
    assert world.executor.continued == [(run_id, "anna")]
