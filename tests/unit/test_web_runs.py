"""The dashboard's runs, run, approval, schedules, audit and ask pages (issue 16).

FastAPI's TestClient on the real app (:func:`patchpilot.api.create_app` plus
:func:`patchpilot.web.install`) and a real SQLite store; users log in with real passwords
(argon2) through ``POST /login``. Runs are real run graphs over the scripted fleet, driven by
the in-test executor of tests/unit/test_api.py (``World``), whose ``continue_run`` continues
the run in the calling thread and records who asked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from patchpilot.app import users
from patchpilot.core.audit import read_events
from patchpilot.core.models import utcnow
from patchpilot.web import install
from tests.unit.test_api import UNKNOWN_RUN, World

PASSWORDS = {
    "vera": "vera-viewer-password",
    "otto": "otto-operator-password",
    "anna": "anna-approver-password",
    "ada": "ada-admin-password!",
}
SCRIPT = "<script>alert(1)</script>"
ATTR = '" onmouseover=alert(1) x="'
HOSTILE = f"{SCRIPT}{ATTR}"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class Web:
    """The service of test_api's ``World`` with the dashboard installed, one browser-like
    client (cookie jar) per user."""

    def __init__(self, home: Path) -> None:
        self.world = World(home)
        install(self.world.app)
        for name, password in PASSWORDS.items():
            users.set_password(self.world.store, name, password, actor="admin")
        self._clients: dict[str, TestClient] = {}

    @property
    def store(self) -> object:
        return self.world.store

    def client(self, who: str) -> TestClient:
        """``who``'s logged-in client (a session cookie from ``POST /login``)."""
        if who not in self._clients:
            client = TestClient(self.world.app, raise_server_exceptions=False)
            response = client.post(
                "/login",
                data={"username": who, "password": PASSWORDS[who]},
                follow_redirects=False,
            )
            assert response.status_code == 303, response.text
            assert "pp_session" in client.cookies
            self._clients[who] = client
        return self._clients[who]

    def anonymous(self) -> TestClient:
        return TestClient(self.world.app, raise_server_exceptions=False)

    def csrf(self, who: str, path: str = "/runs") -> str:
        page = self.client(who).get(path)
        assert page.status_code == 200, page.text
        found = CSRF_RE.search(page.text)
        assert found is not None, "no csrf_token field on " + path
        return found.group(1)

    def post(
        self, who: str, path: str, data: dict[str, str], *, csrf: bool = True
    ) -> tuple[int, str, str | None]:
        """POST a form as ``who`` (with their CSRF token unless ``csrf`` is false)."""
        form = dict(data)
        if csrf:
            form["csrf_token"] = self.csrf(who)
        response = self.client(who).post(path, data=form, follow_redirects=False)
        return response.status_code, response.text, response.headers.get("location")

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self.world.client.close()
        self.world.store.close()


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    users.forget_verified()
    w = Web(tmp_path / "home")
    try:
        yield w
    finally:
        w.close()


def _approval_status(web: Web, run_id: str) -> str:
    record = web.world.store.approval(run_id)
    assert record is not None
    return record.status


# --------------------------------------------------------------------------- runs


def test_the_runs_list_shows_status_trigger_requester_and_filters(web: Web) -> None:
    run_id = web.world.waiting_run()
    page = web.client("vera").get("/runs")
    assert page.status_code == 200, page.text
    assert f'href="/runs/{run_id}"' in page.text
    assert "awaiting_approval" in page.text
    assert f'href="/approvals/{run_id}"' in page.text
    row = page.text[page.text.index(f'href="/runs/{run_id}"') :].split("</tr>", 1)[0]
    assert "otto" in row  # who asked (the run's first audit event)
    assert "patch run" in row

    assert run_id not in web.client("vera").get("/runs", params={"status": "completed"}).text
    assert run_id not in web.client("vera").get("/runs", params={"kind": "scan"}).text
    assert run_id in web.client("vera").get("/runs", params={"kind": "run"}).text
    assert run_id in web.client("vera").get("/runs", params={"status": "awaiting_approval"}).text


def test_the_runs_list_pages(web: Web) -> None:
    store = web.world.store
    start = utcnow() - timedelta(days=1)
    ids = [f"20260101T{i // 60:02d}{i % 60:02d}00Z-{i:06x}" for i in range(55)]
    for i, run_id in enumerate(ids):
        store.create_run(
            run_id,
            kind="scan",
            target="all",
            params={"trigger": "schedule", "schedule_id": "nightly", "requested_by": "sched"},
            started_at=start + timedelta(minutes=i),
        )
        store.finish_run(run_id, status="succeeded", summary={})
    first = web.client("vera").get("/runs").text
    second = web.client("vera").get("/runs", params={"page": 2}).text
    assert "page 1 of 2" in first
    assert ids[-1] in first
    assert ids[0] not in first
    assert ids[0] in second
    assert ids[-1] not in second
    assert "schedule" in first
    assert "nightly" in first
    assert web.client("vera").get("/runs", params={"page": 0}).status_code == 422


def test_the_run_page_shows_plan_deployments_health_and_audit(web: Web) -> None:
    run_id = web.world.waiting_run()
    status, _, location = web.post(
        "anna", f"/approvals/{run_id}/approve", {"comment": "looks fine"}
    )
    assert status == 303
    assert location == f"/runs/{run_id}"
    page = web.client("vera").get(f"/runs/{run_id}")
    assert page.status_code == 200, page.text
    text = page.text
    assert "completed" in text
    for host in ("canary-1", "web-1"):
        assert host in text
    assert "acme-web" in text
    assert "1.0.0 → 1.1.0" in text  # every host's from → to
    assert "installed" in text
    assert "Rings and waves" in text
    assert "wave 1" in text
    assert "health checks" in text.lower()
    assert "before:" in text
    assert "after:" in text
    assert "Audit trail" in text
    for action in ("run.started", "approval.granted"):
        assert action in text
    assert "looks fine" in text
    assert "anna" in text
    assert f'href="/runs/{run_id}"' in text  # the refresh link works without JavaScript
    assert "data-live-url" not in text  # it ended: no live refresh
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_the_live_fragment_refreshes_only_active_runs(web: Web) -> None:
    run_id = web.world.waiting_run()
    fragment = web.client("vera").get(f"/runs/{run_id}/live")
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="run-live"')
    assert "<html" not in fragment.text
    assert "awaiting_approval" in fragment.text
    assert "data-live-url" not in fragment.text  # waiting for a person: nothing to poll

    queued = "20260101T000000Z-0a0b0c"
    web.world.app.state.api.submitted.add(queued)  # queued: the store does not know it yet
    live = web.client("vera").get(f"/runs/{queued}/live").text
    assert f'data-live-url="/runs/{queued}/live"' in live
    assert "queued" in live
    page = web.client("vera").get(f"/runs/{queued}").text
    assert f'data-live-url="/runs/{queued}/live"' in page
    assert '<script src="/static/app.js"' in page
    script = web.client("vera").get("/static/app.js")
    assert script.status_code == 200
    assert "data-live-url" in script.text


# --------------------------------------------------------------------------- approvals


def test_the_approvals_list_and_page_show_what_an_approver_needs(web: Web) -> None:
    run_id = web.world.waiting_run()
    listed = web.client("vera").get("/approvals").text
    assert f'href="/approvals/{run_id}"' in listed
    assert "otto" in listed
    assert "acme-web 1.0.0 → 1.1.0" in listed
    assert "canary-1, web-1" in listed

    record = web.world.store.approval(run_id)
    assert record is not None
    page = web.client("anna").get(f"/approvals/{run_id}")
    assert page.status_code == 200, page.text
    text = page.text
    assert record.plan_id in text
    assert record.content_hash in text
    assert "1.0.0 → 1.1.0" in text
    assert "canary-1" in text
    assert "web-1" in text
    assert "Compatibility test" in text
    assert "apt simulation passed" in text
    assert "Services restarted" in text
    assert "Reboot needed" in text
    assert "Blast radius" in text
    assert "2 host(s)" in text
    assert "Past outcomes and incidents" in text
    assert "otto" in text  # who asked
    assert "Predicted impact, wave by wave" in text  # no history yet: said so, not guessed
    assert "no history" in text
    # Contract: the approve form posts csrf_token and comment
    form = text[text.index(f'action="/approvals/{run_id}/approve"') :].split("</form>", 1)[0]
    assert 'name="csrf_token"' in form
    assert 'name="comment"' in form
    assert f'action="/approvals/{run_id}/reject"' in text


def test_an_approver_approves_and_the_executor_continues_the_run(web: Web) -> None:
    run_id = web.world.waiting_run()
    status, _, location = web.post("anna", f"/approvals/{run_id}/approve", {"comment": "ok"})
    assert status == 303
    assert location == f"/runs/{run_id}"
    record = web.world.store.approval(run_id)
    assert record is not None
    assert record.status == "approved"
    assert record.decided_by == "anna"
    assert record.comment == "ok"
    assert web.world.executor.continued == [(run_id, "anna")]
    run = web.world.store.get_run(run_id)
    assert run is not None
    assert run.status == "completed"
    granted = [
        e for e in read_events(web.world.settings, run_id=run_id) if e.action == "approval.granted"
    ]
    assert [e.actor for e in granted] == ["anna"]


def test_a_reject_ends_the_run_rejected(web: Web) -> None:
    run_id = web.world.waiting_run()
    status, _, _ = web.post("anna", f"/approvals/{run_id}/reject", {"comment": "not today"})
    assert status == 303
    assert _approval_status(web, run_id) == "rejected"
    assert web.world.executor.continued == [(run_id, "anna")]
    assert "rejected" in web.client("vera").get(f"/runs/{run_id}").text


def test_the_requester_sees_no_form_and_a_forged_post_is_refused(web: Web) -> None:
    # the admin may decide, but not a run they requested
    response = web.world.client.post(
        "/api/v1/runs", json={"only": ["acme-web=1.1.0"]}, headers=web.world.auth("ada")
    )
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    page = web.client("ada").get(f"/approvals/{run_id}").text
    assert f'action="/approvals/{run_id}/approve"' not in page
    assert f'action="/approvals/{run_id}/reject"' not in page
    assert "You requested this run" in page

    for verb in ("approve", "reject"):
        status, body, _ = web.post("ada", f"/approvals/{run_id}/{verb}", {"comment": "mine"})
        assert status == 403, body
        assert "requested" in body
    assert _approval_status(web, run_id) == "pending"
    assert web.world.executor.continued == []
    refused = [
        e for e in read_events(web.world.settings, run_id=run_id) if e.action == "approval.refused"
    ]
    assert refused
    assert {e.actor for e in refused} == {"ada"}
    assert {e.details.get("via") for e in refused} == {"web"}


def test_the_operator_requester_and_a_viewer_are_refused(web: Web) -> None:
    run_id = web.world.waiting_run()  # requested by otto, an operator
    for who in ("otto", "vera"):
        page = web.client(who).get(f"/approvals/{run_id}").text
        assert f'action="/approvals/{run_id}/approve"' not in page, who
        status, _, _ = web.post(who, f"/approvals/{run_id}/approve", {"comment": "forged"})
        assert status == 403, who
    assert "may not decide" in web.client("vera").get(f"/approvals/{run_id}").text
    assert _approval_status(web, run_id) == "pending"
    assert web.world.executor.continued == []


def test_a_decision_without_or_with_a_wrong_csrf_token_is_refused(web: Web) -> None:
    run_id = web.world.waiting_run()
    status, _, _ = web.post("anna", f"/approvals/{run_id}/approve", {"comment": "x"}, csrf=False)
    assert status == 403
    status, _, _ = web.post(
        "anna",
        f"/approvals/{run_id}/approve",
        {"comment": "x", "csrf_token": "not-the-token"},
        csrf=False,
    )
    assert status == 403
    # another user's token is not this session's
    other = web.csrf("vera")
    status, _, _ = web.post(
        "anna", f"/approvals/{run_id}/approve", {"csrf_token": other}, csrf=False
    )
    assert status == 403
    assert _approval_status(web, run_id) == "pending"
    assert web.world.executor.continued == []


def test_an_anonymous_post_goes_to_the_login_page(web: Web) -> None:
    run_id = web.world.waiting_run()
    response = web.anonymous().post(
        f"/approvals/{run_id}/approve", data={"comment": "x"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")
    assert _approval_status(web, run_id) == "pending"


def test_a_decided_approval_answers_409(web: Web) -> None:
    run_id = web.world.waiting_run()
    assert web.post("anna", f"/approvals/{run_id}/approve", {"comment": "ok"})[0] == 303
    status, body, _ = web.post("ada", f"/approvals/{run_id}/reject", {"comment": "late"})
    assert status == 409
    assert "already approved" in body
    record = web.world.store.approval(run_id)
    assert record is not None
    assert record.status == "approved"
    assert record.decided_by == "anna"
    page = web.client("ada").get(f"/approvals/{run_id}").text
    assert f'action="/approvals/{run_id}/reject"' not in page
    assert "nothing more to decide" in page


def test_a_bearer_token_decides_without_csrf(web: Web) -> None:
    run_id = web.world.waiting_run()
    response = web.anonymous().post(
        f"/approvals/{run_id}/approve",
        data={"comment": "automation"},
        headers=web.world.auth("anna"),
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert _approval_status(web, run_id) == "approved"


# --------------------------------------------------------------------------- schedules


def test_schedules_are_added_and_removed_with_csrf(web: Web) -> None:
    form = {"kind": "scan", "cron": "*/5 * * * *", "timezone": "UTC", "duration": "1h"}
    assert web.post("otto", "/schedules", form, csrf=False)[0] == 403
    assert web.post("vera", "/schedules", form)[0] == 403  # a viewer may not schedule
    assert web.world.store.schedules() == []
    assert 'action="/schedules"' not in web.client("vera").get("/schedules").text

    status, _, location = web.post("otto", "/schedules", form)
    assert status == 303
    assert location == "/schedules"
    [created] = web.world.store.schedules()
    assert created.created_by == "otto"
    listed = web.client("vera").get("/schedules").text
    assert created.id in listed
    assert "*/5 * * * *" in listed
    assert f'action="/schedules/{created.id}/remove"' not in listed  # viewer: no buttons

    bad = web.post("otto", "/schedules", {**form, "timezone": "Mars/Olympus"})
    assert bad[0] == 422
    assert "Mars/Olympus" in bad[1]  # the form keeps what was typed, with the reason
    assert len(web.world.store.schedules()) == 1

    page = web.client("otto").get("/schedules").text
    assert f'action="/schedules/{created.id}/remove"' in page
    path = f"/schedules/{created.id}/remove"
    assert web.post("otto", path, {}, csrf=False)[0] == 403
    assert web.post("vera", path, {})[0] == 403
    assert len(web.world.store.schedules()) == 1
    assert web.post("otto", path, {})[0] == 303
    assert web.world.store.schedules() == []
    assert web.post("otto", path, {})[0] == 404
    actions = [e.action for e in read_events(web.world.settings)]
    assert "schedule.added" in actions
    assert "schedule.removed" in actions


# --------------------------------------------------------------------------- audit, ask


def test_the_audit_page_filters_and_pages(web: Web) -> None:
    run_id = web.world.waiting_run()
    page = web.client("vera").get("/audit", params={"run_id": run_id})
    assert page.status_code == 200
    assert "run.started" in page.text
    events = read_events(web.world.settings, run_id=run_id)
    assert f"({len(events)} event" in page.text
    by_actor = web.client("vera").get("/audit", params={"actor": "nobody"}).text
    assert "No audit events match" in by_actor
    assert web.client("vera").get("/audit", params={"run_id": "../etc"}).status_code == 404


def test_ask_answers_a_question_and_refuses_a_viewer_a_change(web: Web) -> None:
    web.world.waiting_run()  # a scan of the fleet is in the store
    assert 'name="text"' in web.client("vera").get("/ask").text
    status, body, _ = web.post("vera", "/ask", {"text": "which hosts need a reboot?"})
    assert status == 200, body
    assert "Answer" in body
    assert 'class="answer' in body
    assert web.post("vera", "/ask", {"text": "which hosts need a reboot?"}, csrf=False)[0] == 403
    status, _, _ = web.post("vera", "/ask", {"text": "patch acme-web on web-1"})
    assert status == 403
    assert len(web.world.store.list_runs()) == 1  # nothing started


# --------------------------------------------------------------------------- hostile input


def test_hostile_strings_render_inert(web: Web) -> None:
    run_id = web.world.waiting_run()
    status, _, _ = web.post("anna", f"/approvals/{run_id}/reject", {"comment": HOSTILE})
    assert status == 303
    record = web.world.store.approval(run_id)
    assert record is not None
    assert record.comment == HOSTILE  # stored verbatim
    hostile_run = "20260101T000000Z-00dead"
    web.world.store.create_run(
        hostile_run, kind="scan", target=SCRIPT, params={"requested_by": ATTR, "trigger": "api"}
    )
    pages = [
        f"/runs/{run_id}",
        f"/runs/{run_id}/live",
        "/approvals?all=1",
        f"/approvals/{run_id}",
        "/audit",
        f"/audit?actor={ATTR}",
        "/runs",
    ]
    for path in pages:
        page = web.client("vera").get(path)
        assert page.status_code == 200, (path, page.text)
        assert SCRIPT not in page.text, path
        assert ATTR not in page.text, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in web.client("vera").get(f"/runs/{run_id}").text
    assert "onmouseover" in web.client("vera").get("/runs").text  # shown, as text

    status, body, _ = web.post("vera", "/ask", {"text": f"what about {HOSTILE}?"})
    assert status == 200, body
    assert SCRIPT not in body
    assert ATTR not in body
    assert "&lt;script&gt;" in body


# --------------------------------------------------------------------------- run ids


@pytest.mark.parametrize(
    "run_id",
    [
        UNKNOWN_RUN,
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "run-1",
        "20260101T000000Z-ABCDEF",
        "x" * 300,
    ],
)
def test_bad_and_unknown_run_ids_are_404(web: Web, run_id: str) -> None:
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/live", f"/approvals/{run_id}"):
        response = web.client("ada").get(path)
        assert response.status_code == 404, (path, response.text)
        assert "text/html" in response.headers["content-type"]
    for verb in ("approve", "reject"):
        status, _, _ = web.post("ada", f"/approvals/{run_id}/{verb}", {"comment": "x"})
        assert status == 404, verb
    assert web.world.executor.continued == []


def test_the_approval_page_recalls_past_incidents_of_its_packages(web: Web) -> None:
    from patchpilot.tools.memory import IncidentMemory

    memory = web.world.app.state.api.memory()
    memory.remember(
        IncidentMemory(
            run_id="20251101T000000Z-0c0c0c",
            host="web-1",
            package="acme-web",
            version="1.1.0",
            summary=f"health check failed: HTTP 503 {SCRIPT}",
        )
    )
    memory.remember(
        IncidentMemory(
            run_id="20251101T000000Z-0d0d0d",
            host="web-1",
            package="other-pkg",
            version="2.0",
            summary="unrelated package broke",
        )
    )
    run_id = web.world.waiting_run()
    page = web.client("anna").get(f"/approvals/{run_id}").text
    section = page[page.index("Past outcomes and incidents") :].split("</section>", 1)[0]
    assert "incident on web-1 with acme-web 1.1.0: health check failed: HTTP 503" in section
    assert "unrelated package broke" not in section
    assert SCRIPT not in page


def test_a_change_request_becomes_a_run_waiting_for_approval(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patchpilot.app import contexts

    first = web.world.waiting_run()  # the fleet is scanned; then free the hosts again
    assert web.post("anna", f"/approvals/{first}/reject", {"comment": "later"})[0] == 303
    executor = web.world.executor
    monkeypatch.setattr(
        contexts,
        "run_context",
        lambda settings, store, policy, *, actor: executor._context(store, policy, actor),
    )
    status, body, _ = web.post("otto", "/ask", {"text": "upgrade acme-web to 1.1.0 on web-1"})
    assert status == 200, body
    runs = [r for r in web.world.store.list_runs() if r.run_id != first and r.kind == "run"]
    [run] = runs
    assert run.status == "awaiting_approval"
    assert f'href="/runs/{run.run_id}"' in body
    assert f'href="/approvals/{run.run_id}"' in body
    record = web.world.store.approval(run.run_id)
    assert record is not None
    assert record.status == "pending"
    # the chat's requester may not approve it either
    assert 'action="/approvals/' not in web.client("otto").get(f"/approvals/{run.run_id}").text
    assert "otto" in web.client("anna").get(f"/approvals/{run.run_id}").text
