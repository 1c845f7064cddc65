"""The REST API (:mod:`patchpilot.api`) through FastAPI's TestClient, on a real SQLite store.

Users and tokens are real (:mod:`patchpilot.app.users`, argon2); runs are real run graphs over
the scripted fleet of :mod:`tests.fakes`, driven by a small in-test executor with the
executor's interface (``submit_run``, ``continue_run``, ``cancel``) that runs them in the
calling thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from patchpilot.api import create_app
from patchpilot.app import users
from patchpilot.app.approvals import continue_waiting_run, decision_of
from patchpilot.app.executor import RunRequest
from patchpilot.core.audit import AuditLog, read_events
from patchpilot.core.models import Host
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import Store
from patchpilot.graphs.run import RunContext, start_run
from tests.fakes import HEALTH_ARGV, FakeDebianHost, fleet_factory

REPO = Path(__file__).resolve().parents[2]
ACME = ("1.0.0", "1.1.0", "1.2.0")
HOSTS = [
    Host(name="canary-1", address="127.0.0.1", tags=["web", "staging", "canary"], criticality=2),
    Host(name="web-1", address="127.0.0.1", tags=["web", "prod"], criticality=4),
]
UNKNOWN_RUN = "20260101T000000Z-abcdef"


class FleetExecutor:
    """The executor's interface over the scripted fleet, running work in the caller's thread."""

    def __init__(self, settings: Settings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.fleet = {
            h.name: FakeDebianHost(
                h.name, {"acme-web": "1.0.0", "base-files": "12.4+deb12u11"}, {"acme-web": ACME}
            )
            for h in HOSTS
        }
        self.cancelled: list[tuple[str, str]] = []
        self.continued: list[tuple[str, str]] = []
        self.queued: list[tuple[RunRequest, str]] = []
        """Chat changes: queued, never driven (as the service's executor, not started)."""

    def _context(self, store: Store, policy: Policy, actor: str) -> RunContext:
        return RunContext(
            settings=self.settings,
            store=store,
            policy=policy,
            transport_factory=fleet_factory(self.fleet),
            audit=AuditLog.for_settings(self.settings, actor=actor),
        )

    def submit_run(self, request: Any, *, actor: str, trigger: str) -> str:
        assert isinstance(request, RunRequest)
        assert trigger in ("api", "chat")
        if trigger == "chat":
            self.queued.append((request, actor))
            return f"20260101T000000Z-{len(self.queued):06x}"
        with Store(self.settings.store_path) as store:
            result = start_run(
                HOSTS,
                self._context(store, self.policy, actor),
                target="all",
                policy=self.policy,
                only=request.only_items(),
                offline=True,
            )
        return result.run_id

    def continue_run(self, run_id: str, *, actor: str) -> None:
        self.continued.append((run_id, actor))
        with Store(self.settings.store_path) as store:
            record = store.approval(run_id)
            assert record is not None
            continue_waiting_run(
                self.settings,
                store,
                run_id,
                decision_of(record),
                lambda frozen: self._context(store, frozen, actor),
            )

    def cancel(self, run_id: str, *, actor: str) -> None:
        self.cancelled.append((run_id, actor))


class World:
    """A service: settings under a temp home, users with tokens, the client."""

    def __init__(self, home: Path) -> None:
        self.settings = load_settings(None, home=str(home))
        data = yaml.safe_load((REPO / "configs" / "policy.yaml").read_text())
        data["health"] = {
            "checks": [
                {
                    "name": "acme-web",
                    "check": {"kind": "command", "argv": list(HEALTH_ARGV), "interval_s": 0},
                }
            ]
        }
        self.policy_path = home / "policy.yaml"
        home.mkdir(parents=True, exist_ok=True)
        self.policy_path.write_text(yaml.safe_dump(data))
        self.inventory_path = home / "inventory.yaml"
        self.inventory_path.write_text(
            yaml.safe_dump(
                {"hosts": {h.name: {"address": h.address, "tags": sorted(h.tags)} for h in HOSTS}}
            )
        )
        self.executor = FleetExecutor(self.settings, load_policy(self.policy_path))
        self.store = Store(self.settings.store_path)
        self.tokens = {
            name: users.add_user(self.store, name, role, actor="admin")
            for name, role in (
                ("vera", "viewer"),
                ("otto", "operator"),
                ("anna", "approver"),
                ("ada", "admin"),
            )
        }
        self.app = create_app(
            self.settings,
            inventory=self.inventory_path,
            policy=self.policy_path,
            executor=self.executor,
            store=self.store,
        )
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def waiting_run(self) -> str:
        response = self.client.post(
            "/api/v1/runs", json={"only": ["acme-web=1.1.0"]}, headers=self.auth("otto")
        )
        assert response.status_code == 202, response.text
        document = response.json()
        assert document["status"] == "awaiting_approval"
        run_id: str = document["run_id"]
        return run_id


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    w = World(tmp_path / "home")
    try:
        yield w
    finally:
        w.client.close()
        w.store.close()


# --------------------------------------------------------------------------- authentication


def test_health_needs_no_token_and_openapi_is_published(world: World) -> None:
    health = world.client.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    spec = world.client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/approvals/{run_id}/approve"):
        assert path in spec["paths"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": "Bearer pp_abcdefgh_" + "x" * 43},
    ],
)
def test_requests_without_a_valid_token_get_401(world: World, headers: dict[str, str]) -> None:
    for method, path in (
        ("GET", "/api/v1/runs"),
        ("POST", "/api/v1/runs"),
        ("GET", "/api/v1/approvals"),
        ("GET", "/metrics"),
    ):
        response = world.client.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_disabled_user_is_refused(world: World) -> None:
    users.disable_user(world.store, "vera", actor="admin")
    users.forget_verified()
    assert world.client.get("/api/v1/runs", headers=world.auth("vera")).status_code == 401


def test_roles_are_enforced(world: World) -> None:
    assert world.client.get("/api/v1/runs", headers=world.auth("vera")).status_code == 200
    for who in ("vera", "anna"):  # a viewer and an approver may not start runs
        response = world.client.post("/api/v1/runs", json={}, headers=world.auth(who))
        assert response.status_code == 403, who
    assert (
        world.client.post(
            "/api/v1/schedules",
            json={"kind": "scan", "cron": "*/5 * * * *", "timezone": "UTC"},
            headers=world.auth("vera"),
        ).status_code
        == 403
    )


# --------------------------------------------------------------------------- runs, approvals


def test_the_contract_run_through_the_api(world: World) -> None:
    run_id = world.waiting_run()
    doc = world.client.get(f"/api/v1/runs/{run_id}", headers=world.auth("vera")).json()
    assert doc["schema"] == "patchpilot.run/v1"
    assert doc["status"] == "awaiting_approval"
    assert "deployments" in doc
    listed = world.client.get("/api/v1/approvals", headers=world.auth("vera")).json()
    [entry] = listed["approvals"]
    assert entry["run_id"] == run_id
    assert entry["requested_by"] == "otto"
    assert entry["expires_at"]

    # the operator (the requester, and a role without decide) and a viewer are refused
    for who in ("otto", "vera"):
        refused = world.client.post(
            f"/api/v1/approvals/{run_id}/approve", json={"comment": "mine"}, headers=world.auth(who)
        )
        assert refused.status_code == 403, who
    assert world.client.post(f"/api/v1/approvals/{run_id}/approve", json={}).status_code == 401

    approved = world.client.post(
        f"/api/v1/approvals/{run_id}/approve", json={"comment": "ok"}, headers=world.auth("anna")
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["approval"]["status"] == "approved"
    assert approved.json()["approval"]["decided_by"] == "anna"
    assert world.executor.continued == [(run_id, "anna")]
    after = world.client.get(f"/api/v1/runs/{run_id}", headers=world.auth("vera")).json()
    assert after["status"] != "awaiting_approval"
    assert after["approval"]["decided_by"] == "anna"

    again = world.client.post(
        f"/api/v1/approvals/{run_id}/reject", json={"comment": "late"}, headers=world.auth("ada")
    )
    assert again.status_code == 409
    actors = {e.actor for e in read_events(world.settings, run_id=run_id)}
    assert {"otto", "anna"} <= actors

    waited = world.client.get(
        f"/api/v1/runs/{run_id}/wait", params={"timeout": 1}, headers=world.auth("vera")
    ).json()
    assert waited["waited_out"] is False
    listed_runs = world.client.get("/api/v1/runs", headers=world.auth("vera")).json()
    assert run_id in {r["run_id"] for r in listed_runs["runs"]}


def test_an_admin_may_not_approve_a_run_they_requested(world: World) -> None:
    response = world.client.post(
        "/api/v1/runs", json={"only": ["acme-web=1.1.0"]}, headers=world.auth("ada")
    )
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    refused = world.client.post(
        f"/api/v1/approvals/{run_id}/approve", json={}, headers=world.auth("ada")
    )
    assert refused.status_code == 403
    assert "requested" in refused.json()["detail"]
    record = world.store.approval(run_id)
    assert record is not None
    assert record.status == "pending"


def test_cancel_goes_to_the_executor(world: World) -> None:
    run_id = world.waiting_run()
    assert (
        world.client.post(f"/api/v1/runs/{run_id}/cancel", headers=world.auth("vera")).status_code
        == 403
    )
    response = world.client.post(f"/api/v1/runs/{run_id}/cancel", headers=world.auth("otto"))
    assert response.status_code == 202
    assert world.executor.cancelled == [(run_id, "otto")]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "run_id",
    [
        UNKNOWN_RUN,
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "run-1",
        "20260101T000000Z-ABCDEF",
        "x" * 300,
    ],
)
def test_unknown_and_hostile_run_ids_are_404(world: World, run_id: str) -> None:
    for method, path in (
        ("GET", f"/api/v1/runs/{run_id}"),
        ("GET", f"/api/v1/runs/{run_id}/wait?timeout=0"),
        ("POST", f"/api/v1/runs/{run_id}/cancel"),
        ("POST", f"/api/v1/approvals/{run_id}/approve"),
        ("POST", f"/api/v1/approvals/{run_id}/reject"),
    ):
        response = world.client.request(method, path, headers=world.auth("ada"), json={})
        assert response.status_code == 404, (method, path, response.text)
    assert world.executor.cancelled == []


def test_a_raw_path_traversal_never_reaches_a_route(world: World) -> None:
    response = world.client.get("/api/v1/runs/../../etc/passwd", headers=world.auth("ada"))
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"only": ["acme-web=1.1.0"], "bogus": 1}', "application/json"),
        (b'{"only": "acme-web"}', "application/json"),
        (b'{"only": ["acme web; rm -rf /"]}', "application/json"),
        (b'{"limit": "web\\u001b[2J"}', "application/json"),
        (b"[]", "application/json"),
        (b"\xff\xfe", "application/json"),
    ],
)
def test_invalid_run_requests_are_422_and_start_nothing(
    world: World, body: bytes, content_type: str
) -> None:
    response = world.client.post(
        "/api/v1/runs",
        content=body,
        headers={**world.auth("otto"), "Content-Type": content_type},
    )
    assert response.status_code == 422, response.text
    assert world.store.list_runs() == []


def test_an_oversized_body_is_413(world: World) -> None:
    big = {"only": ["acme-web"], "limit": "a" * (world.settings.service.max_body_bytes + 10)}
    response = world.client.post("/api/v1/runs", json=big, headers=world.auth("otto"))
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"limit": "'
        for _ in range(100):
            yield b"a" * 1024
        yield b'"}'

    chunked = world.client.post(
        "/api/v1/runs",
        content=chunks(),
        headers={**world.auth("otto"), "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert world.store.list_runs() == []


def test_decisions_refuse_unknown_fields_and_control_characters(world: World) -> None:
    run_id = world.waiting_run()
    path = f"/api/v1/approvals/{run_id}/approve"
    for body in (
        {"comment": "ok", "approve": True},
        {"comment": "\x1b[2J\x1b]0;pwned\x07"},
        {"comment": "x" * 2001},
        {"comment": "bidi \u202e override"},
    ):
        response = world.client.post(path, json=body, headers=world.auth("anna"))
        assert response.status_code == 422, body
    record = world.store.approval(run_id)
    assert record is not None
    assert record.status == "pending"


def test_hostile_comments_are_stored_verbatim_and_served_inert(world: World) -> None:
    run_id = world.waiting_run()
    hostile = "<script>alert(1)</script> $(rm -rf /) `id` ' OR 1=1 -- {{7*7}}"
    response = world.client.post(
        f"/api/v1/approvals/{run_id}/reject",
        json={"comment": hostile},
        headers=world.auth("anna"),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    record = world.store.approval(run_id)
    assert record is not None
    assert record.comment == hostile
    listed = world.client.get(
        "/api/v1/approvals", params={"all": "true"}, headers=world.auth("vera")
    ).json()
    assert listed["approvals"][0]["comment"] == hostile
    assert (
        world.client.get(f"/api/v1/runs/{run_id}", headers=world.auth("vera")).json()["status"]
        == "rejected"
    )


def test_query_filters_are_validated(world: World) -> None:
    ok = world.client.get(
        "/api/v1/findings",
        params={"severity": "high", "kev": "true", "actionable": "true"},
        headers=world.auth("vera"),
    )
    assert ok.status_code == 200
    assert ok.json()["summary"]["findings"] == 0
    bad = world.client.get(
        "/api/v1/findings", params={"severity": "apocalyptic"}, headers=world.auth("vera")
    )
    assert bad.status_code == 422
    traversal = world.client.get(
        "/api/v1/findings", params={"run": "../../etc/passwd"}, headers=world.auth("vera")
    )
    assert traversal.status_code == 404
    assert (
        world.client.get(
            "/api/v1/runs/" + UNKNOWN_RUN + "/wait",
            params={"timeout": "nan"},
            headers=world.auth("vera"),
        ).status_code
        == 422
    )


# --------------------------------------------------------------------------- other resources


def test_schedules_audit_hosts_and_compliance(world: World) -> None:
    created = world.client.post(
        "/api/v1/schedules",
        json={"kind": "scan", "cron": "*/5 * * * *", "timezone": "UTC"},
        headers=world.auth("otto"),
    )
    assert created.status_code == 201, created.text
    schedule_id = created.json()["id"]
    bad = world.client.post(
        "/api/v1/schedules",
        json={"kind": "scan", "cron": "*/5 * * * *", "timezone": "Mars/Olympus"},
        headers=world.auth("otto"),
    )
    assert bad.status_code == 422
    listed = world.client.get("/api/v1/schedules", headers=world.auth("vera")).json()
    assert [s["id"] for s in listed["schedules"]] == [schedule_id]
    removed = world.client.delete(f"/api/v1/schedules/{schedule_id}", headers=world.auth("otto"))
    assert removed.status_code == 200
    gone = world.client.delete(f"/api/v1/schedules/{schedule_id}", headers=world.auth("otto"))
    assert gone.status_code == 404

    run_id = world.waiting_run()
    page = world.client.get(
        "/api/v1/audit", params={"run_id": run_id, "limit": 1}, headers=world.auth("vera")
    ).json()
    assert page["total"] >= 1
    assert len(page["events"]) == 1
    hosts = world.client.get("/api/v1/hosts", headers=world.auth("vera")).json()
    assert {h["name"] for h in hosts["hosts"]} == {h.name for h in HOSTS}
    one = world.client.get("/api/v1/hosts/web-1", headers=world.auth("vera")).json()
    assert one["name"] == "web-1"
    assert world.client.get("/api/v1/hosts/nope", headers=world.auth("vera")).status_code == 404
    compliance = world.client.get("/api/v1/compliance", headers=world.auth("vera"))
    assert compliance.status_code == 200, compliance.text
    assert {r["host"] for r in compliance.json()["hosts"]} >= {h.name for h in HOSTS}
    metrics = world.client.get("/metrics", headers=world.auth("vera"))
    assert metrics.status_code == 200
    assert "patchpilot_" in metrics.text


def test_ask_answers_a_viewer_and_refuses_them_a_change(world: World) -> None:
    world.waiting_run()  # a scan of the fleet is in the store
    answer = world.client.post(
        "/api/v1/ask", json={"text": "which hosts need a reboot?"}, headers=world.auth("vera")
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"]
    change = world.client.post(
        "/api/v1/ask", json={"text": "patch acme-web on web-1"}, headers=world.auth("vera")
    )
    assert change.status_code == 403, change.text
    assert (
        world.client.post(
            "/api/v1/ask", json={"text": "hi", "model": "x"}, headers=world.auth("vera")
        ).status_code
        == 422
    )


def test_ask_queues_a_change_on_the_executor_and_answers_at_once(world: World) -> None:
    world.waiting_run()  # a scan of the fleet is in the store
    runs_before = [r.run_id for r in world.store.list_runs()]
    response = world.client.post(
        "/api/v1/ask", json={"text": "patch acme-web on web-1"}, headers=world.auth("otto")
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    [(request, actor)] = world.executor.queued
    run_id = answer["facts"]["run_id"]
    assert answer["run"] == {
        "schema": "patchpilot.run/v1",
        "run_id": run_id,
        "status": "queued",
        "trigger": "chat",
    }
    assert f"Run {run_id}: queued" in answer["text"]
    assert "wait for a person's approval" in answer["text"]
    assert actor == "otto"
    assert request.limit == "web-1"
    assert request.only == ("acme-web",)
    assert request.must_approve is not None
    assert request.must_approve.startswith("requested in chat")
    assert request.policy is not None
    # the request's thread drove no run: nothing new in the store, nothing installed
    assert [r.run_id for r in world.store.list_runs()] == runs_before
    assert not world.executor.fleet["web-1"].installs


def test_serve_refuses_a_remote_address_without_allow_remote(world: World) -> None:
    from typer.testing import CliRunner

    from patchpilot.cli.main import app
    from patchpilot.cli.serve import is_loopback
    from patchpilot.core.errors import ConfigError

    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.0.2.1")
    result = CliRunner().invoke(
        app,
        [
            "--home",
            str(world.settings.home),
            "serve",
            "--inventory",
            str(world.inventory_path),
            "--policy",
            str(world.policy_path),
            "--host",
            "0.0.0.0",
        ],
    )
    assert isinstance(result.exception, ConfigError)
    assert "--allow-remote" in str(result.exception)


def test_metrics_numbers_equal_the_apis(world: World) -> None:
    """Issue 15: /metrics parses with prometheus-client and its numbers equal the API's."""
    from prometheus_client.parser import text_string_to_metric_families

    world.waiting_run()  # a scan of the fleet is in the store
    text = world.client.get("/metrics", headers=world.auth("vera")).text
    samples = {
        (s.name, s.labels.get("host")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    hosts = world.client.get("/api/v1/hosts", headers=world.auth("vera")).json()["hosts"]
    assert hosts
    for host in hosts:
        pending = host["pending_updates"]
        assert samples[("patchpilot_pending_updates", host["name"])] == len(pending)
        assert samples[("patchpilot_security_updates", host["name"])] == sum(
            1 for u in pending if u["security"]
        )
