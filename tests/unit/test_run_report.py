"""The patch-run document: one deployment row per plan item, host compliance, failpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from patchpilot.core.failpoints import _armed
from patchpilot.core.models import Host
from patchpilot.core.plan import PatchPlan, PlanItem
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.settings import load_settings
from patchpilot.core.store import DeploymentRecord
from patchpilot.core.testing_models import (
    HostPrediction,
    ItemPrediction,
    ItemStatus,
    RiskLevel,
    TestReport,
)
from patchpilot.graphs.run import RunResult, RunSnapshot, RunState, deployable_items
from patchpilot.graphs.run_document import deployment_rows, host_compliance, run_document

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _item(host: str, package: str = "acme-web", to: str = "1.1.0") -> PlanItem:
    return PlanItem(
        host=host, package=package, from_version="1.0.0", to_version=to, rule="r", reason="test"
    )


def _plan(*items: PlanItem) -> PatchPlan:
    return PatchPlan.create(run_id="run-1", created_at=NOW, items=items)


def _policy() -> Policy:
    return load_policy(load_settings().policy_path)


def _prediction(item: PlanItem, status: ItemStatus) -> ItemPrediction:
    return ItemPrediction(
        host=item.host,
        package=item.package,
        from_version=item.from_version,
        to_version=item.to_version,
        status=status,
        risk=RiskLevel.HIGH if status is ItemStatus.BLOCKED else RiskLevel.LOW,
        reasons=(f"{status.value} because of the test",),
    )


def _testing(plan: PatchPlan, statuses: dict[str, ItemStatus]) -> TestReport:
    hosts = []
    for name in plan.hosts:
        preds = tuple(
            _prediction(i, statuses.get(name, ItemStatus.READY)) for i in plan.items_for(name)
        )
        hosts.append(HostPrediction(host=name, status="simulated", items=preds))
    return TestReport(
        plan_id=plan.plan_id, content_hash=plan.content_hash, tested_at=NOW, hosts=tuple(hosts)
    )


def _snapshot(plan: PatchPlan, testing: TestReport | None = None) -> RunSnapshot:
    hosts = [Host(name=n, address="127.0.0.1") for n in ("a", "b", "c")]
    state = RunState(
        run_id="run-1", target="all", hosts=hosts, policy=_policy(), plan=plan, testing=testing
    )
    return RunSnapshot(state=state, next=(), interrupts=())


def _done(host: str, status: str, compliance: str, reason: str | None = None) -> DeploymentRecord:
    return DeploymentRecord(
        run_id="run-1",
        host=host,
        ring="canary",
        state="done",
        items=[],
        started_at=NOW,
        finished_at=NOW,
        result={
            "items": [
                {
                    "host": host,
                    "package": "acme-web",
                    "from_version": "1.0.0",
                    "to_version": "1.1.0",
                    "status": status,
                    "reason": reason,
                    "compliance": compliance,
                }
            ]
        },
    )


def test_every_plan_item_has_one_row_whatever_happened() -> None:
    plan = _plan(_item("a"), _item("b"), _item("c"))
    testing = _testing(plan, {"c": ItemStatus.FAILED})
    running = DeploymentRecord(
        run_id="run-1",
        host="b",
        ring="canary",
        state="running",
        items=[_item("b").model_dump(mode="json")],
        started_at=NOW,
    )
    rows = deployment_rows(
        plan,
        _snapshot(plan, testing),
        [_done("a", "rolled_back", "failed", "health"), running],
        status="halted",
        waiting=None,
        reason="ring canary halted",
    )
    by_host = {r["host"]: r for r in rows}
    assert [r["host"] for r in rows] == ["a", "b", "c"]
    assert (by_host["a"]["status"], by_host["a"]["reason"]) == ("rolled_back", "health")
    assert by_host["b"]["status"] == "pending"
    assert "interrupted" in by_host["b"]["reason"]
    assert by_host["c"]["status"] == "skipped"
    assert "failed-prediction" in by_host["c"]["reason"]
    assert by_host["c"]["compliance"] == "missing"


def test_pending_rows_say_what_the_run_waits_for() -> None:
    plan = _plan(_item("a"))
    rows = deployment_rows(
        plan, _snapshot(plan), [], status="awaiting_approval", waiting="approval", reason=None
    )
    assert (rows[0]["status"], rows[0]["reason"]) == ("pending", "waiting for approval")


def test_blocked_items_deploy_only_after_an_approval() -> None:
    plan = _plan(_item("a"), _item("b"))
    testing = _testing(plan, {"b": ItemStatus.BLOCKED})
    deploy, skipped = deployable_items(plan, testing, approved=False)
    assert list(deploy) == ["a"]
    assert "blocked by the compatibility test until approved" in skipped[("b", "acme-web")]
    deploy, skipped = deployable_items(plan, testing, approved=True)
    assert sorted(deploy) == ["a", "b"]
    assert skipped == {}


def test_host_compliance_is_the_worst_item_state() -> None:
    rows = [
        {"host": "a", "compliance": "installed"},
        {"host": "a", "compliance": "missing"},
        {"host": "b", "compliance": "installed-pending-reboot"},
        {"host": "b", "compliance": "installed"},
        {"host": "c", "compliance": "failed"},
    ]
    assert host_compliance(["a", "b", "c", "d"], rows) == {
        "a": "missing",
        "b": "installed-pending-reboot",
        "c": "failed",
        "d": "not-applicable",
    }


def test_run_document_has_the_contract_fields() -> None:
    plan = _plan(_item("a"))
    result = RunResult(run_id="run-1", status="completed")
    doc = run_document(result, _snapshot(plan), [_done("a", "installed", "installed")], None)
    assert doc["schema"] == "patchpilot.run/v1"
    assert (doc["run_id"], doc["status"], doc["waiting"], doc["hint"]) == (
        "run-1",
        "completed",
        None,
        None,
    )
    assert doc["deployments"] == [
        {
            "host": "a",
            "package": "acme-web",
            "from": "1.0.0",
            "to": "1.1.0",
            "status": "installed",
            "reason": None,
            "ring": "canary",
            "compliance": "installed",
        }
    ]
    assert doc["compliance"] == {"a": "installed", "b": "not-applicable", "c": "not-applicable"}
    assert doc["plan"]["content_hash"] == plan.content_hash
    assert doc["approval"] == {"required": False, "reasons": []}


def test_waiting_runs_carry_a_hint() -> None:
    plan = _plan(_item("a"))
    waiting = RunResult(run_id="r9", status="awaiting_approval", waiting="approval")
    doc = run_document(waiting, _snapshot(plan), [], None)
    assert "patchpilot approve r9" in doc["hint"]
    window = RunResult(run_id="r9", status="halted", waiting="window", reason="closed")
    assert "patchpilot resume r9" in run_document(window, _snapshot(plan), [], None)["hint"]


# --------------------------------------------------------------------------- failpoints


@pytest.mark.parametrize(
    ("spec", "hits", "expected"),
    [
        ("deploy.after_install", 1, ["kill"]),
        ("other,deploy.after_install", 1, ["kill"]),
        ("deploy.after_install#2", 3, [None, "kill", None]),
        ("deploy", 1, [None]),
        ("deploy.after_install:raise", 1, ["raise"]),
        ("deploy.after_install#2:sleep=0.5", 2, [None, "sleep=0.5"]),
    ],
)
def test_failpoint_specs(spec: str, hits: int, expected: list[str | None]) -> None:
    from patchpilot.core import failpoints

    failpoints._hits.clear()
    assert [_armed("deploy.after_install", spec) for _ in range(hits)] == expected


def test_an_armed_failpoint_kills_the_process_like_kill_9() -> None:
    code = (
        "from patchpilot.core.failpoints import failpoint\n"
        "failpoint('x')\nfailpoint('x')\nprint('alive')"
    )
    env = {**os.environ, "PATCHPILOT_FAILPOINTS": "x#2"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == -9
    assert done.stdout == ""


def test_a_failpoint_armed_to_raise_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from patchpilot.core.failpoints import FailpointError, failpoint

    monkeypatch.setenv("PATCHPILOT_FAILPOINTS", "run.finish:raise")
    failpoint("run.after_ring")  # not armed: nothing happens
    with pytest.raises(FailpointError, match=r"run\.finish"):
        failpoint("run.finish")
