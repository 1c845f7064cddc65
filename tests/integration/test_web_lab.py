"""The web dashboard on the lab, in a real headless Chromium (issue 16, "Done means").

``patchpilot serve`` runs as its own process on the lab (the ``Service`` of
tests/integration/test_service.py: users otto operator, vera viewer, anna approver); otto and
anna get web passwords with ``patchpilot users password NAME --password-stdin``. The operator
creates the acme-web 1.1.0 run through the API; it waits for approval (web-1 is tagged prod).
In the browser the requester otto sees no approve form and his forged POST is refused; the
approver anna logs in, opens the approval, reads the plan (web-1: acme-web 1.0.0 -> 1.1.0),
approves with a comment and watches the run page reach ``completed``; dpkg on every host shows
1.1.0. Screenshots of the fleet, approval and run pages go to the test's temporary directory;
with ``PATCHPILOT_UPDATE_SCREENSHOT=1`` the approval page is also copied to docs/dashboard.png
(the README shows it). The lab is restored afterwards (test_service.py's autouse fixture).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from patchpilot.core.audit import AUDIT_FILE, read_events
from tests.browser import (
    browser_cookies,
    has_element,
    login,
    path_of,
    run_status,
    screenshot,
    submit_and_wait,
    wait_until,
)
from tests.integration.test_service import (  # the service fixture and the lab's restore
    _ENDED,
    LAB_HOSTS,
    Service,
    _env,
    _until,
    _version,
    restore_lab,  # noqa: F401 - autouse here too: acme-web 1.0.0 everywhere afterwards
    service,  # noqa: F401 - the fixture
)

if TYPE_CHECKING:
    from tests.integration.lab_fixtures import LabHandle

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UPDATE_SCREENSHOT = os.environ.get("PATCHPILOT_UPDATE_SCREENSHOT") == "1"
"""Read at import: the autouse ``clean_environ`` fixture drops PATCHPILOT_* before each test."""
PASSWORDS = {"otto": "otto-operator-password", "anna": "anna-approver-password"}
RUN_MINUTES = 15
RELOAD_AFTER = 120.0
"""Seconds without the run ending before the test reloads the run page (a fallback only)."""


def set_password(svc: Service, name: str) -> None:
    """``patchpilot users password NAME --password-stdin`` (the password on standard input)."""
    done = subprocess.run(
        [sys.executable, "-m", "patchpilot", "users", "password", name, "--password-stdin"],
        input=PASSWORDS[name] + "\n",
        capture_output=True,
        text=True,
        env=_env(svc.home),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _page_csrf(driver: WebDriver) -> str:
    token = driver.find_element(By.CSS_SELECTOR, "input[name=csrf_token]").get_attribute("value")
    assert token, "the page has no csrf_token field"
    return token


def _logout(driver: WebDriver) -> None:
    submit_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/logout']"))
    assert path_of(driver) == "/login"


class RunWatch:
    """Watches a run page: the statuses it shows, per page load (the test's reloads)."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver
        self.loads = 0
        self.reloaded_at = 0.0
        self.seen: list[tuple[str, int]] = []  # (status shown, page load number)
        self._mark()

    def _mark(self) -> None:
        self.loads += 1
        self.reloaded_at = time.monotonic()
        self.driver.execute_script("window.__pp_load = arguments[0]", self.loads)

    def ended(self, driver: WebDriver) -> bool:
        status = run_status(driver)
        load = int(driver.execute_script("return window.__pp_load || 0"))
        if not self.seen or self.seen[-1] != (status, load):
            self.seen.append((status, load))
        if status in _ENDED:
            return True
        if time.monotonic() - self.reloaded_at > RELOAD_AFTER:
            driver.refresh()
            self._mark()
        return False

    def live_changes(self) -> list[tuple[str, str]]:
        """Status changes the page showed without being loaded again."""
        return [
            (a, b)
            for (a, load_a), (b, load_b) in zip(self.seen, self.seen[1:], strict=False)
            if load_a == load_b and a != b
        ]


def test_an_approver_approves_the_acme_web_run_in_the_browser_and_watches_it_complete(
    lab: LabHandle,
    service: Service,  # noqa: F811 - the fixture imported above
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    for name in PASSWORDS:
        set_password(service, name)
    service.start()
    base = service.base
    lab.exec("db-1", ["apt-mark", "unhold", "acme-web"])
    with httpx.Client(base_url=base, timeout=90) as client:
        created = client.post(
            "/api/v1/runs",
            json={"only": ["acme-web=1.1.0"], "limit": "all"},
            headers=service.auth("otto"),
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        waiting = _until(client, run_id, service.auth("vera"), {"awaiting_approval"} | _ENDED, 10)
    assert waiting["status"] == "awaiting_approval", waiting.get("reason")
    page, approve = f"/approvals/{run_id}", f"/approvals/{run_id}/approve"

    # the requester: the fleet, then the approval page without the approve form; his forged
    # POST (his session, his CSRF token) is refused and changes nothing
    login(browser, base, "otto", PASSWORDS["otto"])
    assert path_of(browser) == "/"
    body = browser.find_element(By.TAG_NAME, "body").text
    for host in LAB_HOSTS:
        assert host in body
    screenshot(browser, tmp_path, "fleet")
    browser.get(base + page)
    assert run_id in browser.find_element(By.TAG_NAME, "body").text
    assert not has_element(browser, f"form[action='{approve}']")
    with httpx.Client(base_url=base, cookies=browser_cookies(browser), timeout=90) as client:
        forged = client.post(approve, data={"csrf_token": _page_csrf(browser), "comment": "me"})
        assert forged.status_code == 403, forged.text
        still = client.get(f"/api/v1/runs/{run_id}", headers=service.auth("vera")).json()
    assert still["status"] == "awaiting_approval"
    _logout(browser)

    # the approver: the pending approval, its plan, approve with a comment
    login(browser, base, "anna", PASSWORDS["anna"])
    browser.get(f"{base}/approvals")
    assert run_id in browser.find_element(By.TAG_NAME, "body").text
    browser.get(base + page)
    assert "acme-web" in browser.find_element(By.TAG_NAME, "body").text
    changes = browser.find_elements(
        By.XPATH,
        "//*[self::tr or self::li or self::article][contains(., 'web-1') and contains(., '1.0.0')"
        " and contains(., '1.1.0')]",
    )
    assert changes, "the plan shows web-1 going from acme-web 1.0.0 to 1.1.0"
    approval_png = screenshot(browser, tmp_path, "approval")
    form = browser.find_element(By.CSS_SELECTOR, f"form[action='{approve}']")
    form.find_element(By.NAME, "comment").send_keys("canary first, from the dashboard")
    submit_and_wait(browser, form)
    assert path_of(browser) == f"/runs/{run_id}"

    # the run page updates itself while the run goes on (static/app.js polls its live part);
    # a reload every 2 minutes is only a fallback, so a broken live refresh still ends
    watch = RunWatch(browser)
    wait_until(browser, watch.ended, timeout=RUN_MINUTES * 60, poll=1, what=f"run {run_id}")
    print(f"run page: statuses seen {watch.seen}; reloads by the test: {watch.loads - 1}")
    assert run_status(browser) == "completed", browser.find_element(By.TAG_NAME, "body").text
    if watch.seen[0][0] not in _ENDED:  # it was still going when the page opened
        assert watch.live_changes(), f"the run page never updated itself: {watch.seen}"
    screenshot(browser, tmp_path, "run")
    browser.get(f"{base}/")
    screenshot(browser, tmp_path, "fleet-after")

    for host in LAB_HOSTS:
        assert _version(lab, host) == "1.1.0 ii"
    events = read_events(service.home / AUDIT_FILE, run_id=run_id)
    granted = [e for e in events if e.action == "approval.granted"]
    assert [(e.actor, e.details.get("comment")) for e in granted] == [
        ("anna", "canary first, from the dashboard")
    ]
    if UPDATE_SCREENSHOT:
        target = REPO / "docs" / "dashboard.png"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(approval_png, target)
        print(f"updated {target}")
