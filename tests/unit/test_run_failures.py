"""Runs that fail: hosts not reached, oversize outside text after a deployment, busy runs.

Hermetic: real pydantic models, a real SQLite store and a real (embedded Chroma) memory in a
temp dir, the real checkpoint serializer; no host is contacted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener

from patchpilot.agents.deployment import HostDeployment, ItemDeployment
from patchpilot.agents.sourcing import SourcingReport
from patchpilot.core.feeds import FeedKind, FeedStatus
from patchpilot.core.models import Host
from patchpilot.core.plan import ComplianceState, PatchPlan, PlanItem
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import Store
from patchpilot.core.testing_models import (
    HostPrediction,
    ItemPrediction,
    ItemStatus,
    RiskLevel,
    TestReport,
)
from patchpilot.graphs.run import (
    ApprovalDecision,
    ApprovalItem,
    ApprovalRequest,
    RunOutcome,
    RunResult,
    RunSnapshot,
    RunState,
    WindowResume,
    WindowWait,
    _final_outcome,
    _remember_deployment,
    _remember_run,
    parse_interrupt,
    unreached_hosts,
)
from patchpilot.graphs.run_document import host_compliance, run_document, run_exit_code
from patchpilot.graphs.scan import (
    HostStatus,
    RunBusyError,
    ScanContext,
    _checkpointer,
    checkpoint_types,
    resume_scan,
    run_lock,
    start_scan,
)
from patchpilot.tools.llm.models import LLMUsage
from patchpilot.tools.memory import VectorMemory

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOSTS = ("a", "b", "c")


def _policy() -> Policy:
    return load_policy(load_settings().policy_path)


def _item(host: str) -> PlanItem:
    return PlanItem(
        host=host,
        package="acme-web",
        from_version="1.0.0",
        to_version="1.1.0",
        rule="r",
        reason="t",
    )


def _state(
    statuses: list[HostStatus],
    *,
    plan: PatchPlan | None = None,
    testing: TestReport | None = None,
    outcome: RunOutcome | None = None,
    approval: ApprovalDecision | None = None,
) -> RunState:
    return RunState(
        run_id="run-1",
        target="all",
        hosts=[Host(name=n, address="127.0.0.1") for n in HOSTS],
        policy=_policy(),
        statuses=statuses,
        plan=plan,
        testing=testing,
        outcome=outcome,
        approval=approval,
    )


def _reached(*names: str) -> list[HostStatus]:
    return [HostStatus(host=n, stage="assessed") for n in names]


def _gone(*names: str) -> list[HostStatus]:
    return [
        HostStatus(host=n, stage="failed", error=f"{n}: connection refused on 127.0.0.1:1")
        for n in names
    ]


# --------------------------------------------------------------------------- hosts not reached


def test_hosts_whose_discovery_failed_are_not_reached_in_inventory_order() -> None:
    state = _state([*_gone("c", "a"), *_reached("b")])
    assert unreached_hosts(state) == {
        "a": "a: connection refused on 127.0.0.1:1",
        "c": "c: connection refused on 127.0.0.1:1",
    }


def test_a_host_discovered_after_an_earlier_failure_counts_as_reached() -> None:
    # A resumed discovery may append a second status for the same host.
    assert unreached_hosts(_state([*_gone("a"), HostStatus(host="a", stage="discovered")])) == {}


def test_a_host_the_compatibility_test_could_not_reach_is_not_reached() -> None:
    plan = PatchPlan.create(run_id="run-1", created_at=NOW, items=[_item("a"), _item("b")])
    testing = TestReport(
        plan_id=plan.plan_id,
        content_hash=plan.content_hash,
        tested_at=NOW,
        hosts=(
            HostPrediction(
                host="a",
                status="unreachable",
                error="a: connection timed out",
                items=(
                    ItemPrediction(
                        host="a",
                        package="acme-web",
                        from_version="1.0.0",
                        to_version="1.1.0",
                        status=ItemStatus.UNREACHABLE,
                        risk=RiskLevel.HIGH,
                        reasons=("unreachable",),
                    ),
                ),
            ),
        ),
    )
    state = _state(_reached(*HOSTS), plan=plan, testing=testing)
    assert unreached_hosts(state) == {"a": "compatibility test: a: connection timed out"}
    doc = run_document(
        RunResult(run_id="run-1", status="partial"),
        RunSnapshot(state=state, next=(), interrupts=()),
        [],
        None,
    )
    rows = {r["host"]: r for r in doc["deployments"]}
    assert (rows["a"]["status"], rows["a"]["compliance"]) == ("skipped", "unknown")
    assert rows["b"]["compliance"] == "missing"
    assert doc["compliance"] == {"a": "unknown", "b": "missing", "c": "not-applicable"}


def test_no_host_reached_fails_the_run_never_completed() -> None:
    state = _state(_gone(*HOSTS), outcome=RunOutcome(status="completed", reason="nothing to do"))
    outcome = _final_outcome(state, unreached_hosts(state))
    assert outcome.status == "failed"
    assert outcome.reason is not None
    assert outcome.reason.startswith("none of the 3 targeted host(s) could be reached: a: ")


def test_some_hosts_not_reached_make_a_completed_run_partial() -> None:
    state = _state([*_gone("b"), *_reached("a", "c")])
    outcome = _final_outcome(state, unreached_hosts(state))
    assert outcome == RunOutcome(
        status="partial",
        reason="1 of 3 targeted host(s) could not be reached: b: connection refused on 127.0.0.1:1",
    )
    # A run that halted or was rejected keeps that status; the document still lists the hosts.
    halted = _state([*_gone("b"), *_reached("a", "c")], outcome=RunOutcome(status="halted"))
    assert _final_outcome(halted, unreached_hosts(halted)).status == "halted"


def test_the_document_lists_hosts_not_reached_with_compliance_unknown() -> None:
    state = _state(_gone(*HOSTS), outcome=RunOutcome(status="failed", reason="none reached"))
    doc = run_document(
        RunResult(run_id="run-1", status="failed", reason="none reached"),
        RunSnapshot(state=state, next=(), interrupts=()),
        [],
        None,
    )
    assert [u["host"] for u in doc["unreachable"]] == list(HOSTS)
    assert doc["compliance"] == dict.fromkeys(HOSTS, ComplianceState.UNKNOWN.value)
    assert "not-applicable" not in doc["compliance"].values()
    assert "could not be reached" in doc["hint"]
    assert run_exit_code(doc) == 4


def test_exit_codes_of_runs_that_did_not_reach_every_host() -> None:
    state = _state([*_gone("b"), *_reached("a", "c")])
    snapshot = RunSnapshot(state=state, next=(), interrupts=())
    partial = run_document(RunResult(run_id="run-1", status="partial"), snapshot, [], None)
    assert partial["compliance"] == {"a": "not-applicable", "b": "unknown", "c": "not-applicable"}
    assert run_exit_code(partial) == 3
    # A run that failed for another reason (a step raised) is 1, not "no host reached".
    other = run_document(RunResult(run_id="run-1", status="failed"), snapshot, [], None)
    assert run_exit_code(other) == 1
    waiting = run_document(
        RunResult(run_id="run-1", status="awaiting_approval", waiting="approval"),
        snapshot,
        [],
        None,
    )
    assert run_exit_code(waiting) == 6


def test_unknown_compliance_wins_over_the_rows_of_a_host() -> None:
    rows = [{"host": "a", "compliance": "installed"}, {"host": "b", "compliance": "installed"}]
    assert host_compliance(["a", "b"], rows, unknown=["a"]) == {"a": "unknown", "b": "installed"}


# --------------------------------------------------------------------------- oversize outside text


def _memory(tmp_path: Path) -> VectorMemory:
    return VectorMemory(tmp_path / "memory")


def test_a_100k_rejection_comment_is_clipped_into_the_memory_not_a_failure(
    tmp_path: Path,
) -> None:
    plan = PatchPlan.create(run_id="run-1", created_at=NOW, items=[_item("a")])
    comment = "no " * 35_000  # ~100 KB: over every text limit of the memory's records
    decision = ApprovalDecision(
        status="rejected", by="alice", comment=comment, at=NOW, content_hash=plan.content_hash
    )
    state = _state(_reached(*HOSTS), plan=plan, approval=decision)
    outcome = RunOutcome(status="rejected", reason=f"rejected by alice: {comment}")
    with _memory(tmp_path) as memory:
        _remember_run(memory, state, outcome)  # must not raise
        (recalled,) = memory.recall("acme-web", kinds=("decisions",), k=1)
    assert "rejected by alice: no no" in recalled.text
    assert len(recalled.text) < 17_000  # text and rationale, each clipped to 8,000


def test_a_huge_failure_reason_is_clipped_into_the_memory(tmp_path: Path) -> None:
    reason = "E: dpkg said " + "x" * 50_000
    deployment = HostDeployment(
        host="a",
        dry_run=False,
        items=(
            ItemDeployment(
                host="a",
                package="acme-web",
                from_version="1.0.0",
                to_version="1.1.0",
                status="failed",
                reason=reason,
                cause="install",
                compliance=ComplianceState.FAILED,
            ),
        ),
        started_at=NOW,
    )
    with _memory(tmp_path) as memory:
        _remember_deployment(memory, "run-1", Host(name="a", address="127.0.0.1"), deployment)
        assert memory.count("outcomes") == 1
        assert memory.count("incidents") == 1


# --------------------------------------------------------------------------- locks


def test_a_scan_driven_elsewhere_can_be_neither_started_nor_resumed(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    with Store(settings.store_path) as store:
        context = ScanContext(settings=settings, store=store, policy=_policy())
        with run_lock(settings, "scan-1"):
            with pytest.raises(RunBusyError, match="being driven by another patchpilot process"):
                resume_scan("scan-1", context)
            with pytest.raises(RunBusyError):
                start_scan([], context, target="all", offline=True, run_id="scan-1")
        with pytest.raises(LookupError):  # the lock is free again: only the checkpoint is missing
            resume_scan("scan-1", context)


# --------------------------------------------------------------------------- checkpoint allowlist


def test_every_type_in_the_state_is_in_the_checkpoint_allowlist() -> None:
    allowed = set(checkpoint_types())
    assert {FeedStatus, FeedKind, SourcingReport, RunState, ApprovalDecision} <= allowed
    # the interrupt payloads and resume values, and the LLM usage records in the state
    assert {ApprovalRequest, ApprovalItem, WindowWait, WindowResume, LLMUsage} <= allowed


def test_interrupt_payloads_round_trip_through_the_checkpointer_without_a_warning(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home")
    request = ApprovalRequest(
        run_id="run-1",
        plan_id="plan-1",
        content_hash="a" * 64,
        reasons=["web-1 is tagged prod (approvals.tags)"],
        expires_at=NOW,
        items=[
            ApprovalItem(
                host="web-1", package="acme-web", from_version="1.0.0", to="1.1.0", rule="r"
            )
        ],
        rings=[],
    )
    wait = WindowWait(run_id="run-1", reason="outside the maintenance window", ring="canary")
    events: list[SerdeEvent] = []
    unregister = register_serde_event_listener(events.append)
    try:
        with _checkpointer(settings) as saver:
            back = saver.serde.loads_typed(
                saver.serde.dumps_typed({"approval": request, "window": wait})
            )
    finally:
        unregister()
    assert back == {"approval": request, "window": wait}
    assert events == []
    # the published JSON is the one of 0.1: "from", an ISO time, no verdict keys when untested
    payload = request.payload()
    assert payload["expires_at"] == NOW.isoformat()
    assert payload["items"] == [
        {
            "host": "web-1",
            "package": "acme-web",
            "from": "1.0.0",
            "to": "1.1.0",
            "rule": "r",
            "cves": [],
        }
    ]
    assert parse_interrupt(payload) == request
    assert parse_interrupt(wait.payload()) == wait


def test_a_sourcing_report_with_feeds_round_trips_without_a_serde_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(home=tmp_path / "home")
    feed = FeedStatus(
        kind=FeedKind.EPSS,
        source="epss_scores-2023-03-07.csv.gz",
        fetched_at=NOW,
        published_at=NOW,
        records=3,
        sha256="0" * 64,
        stale=True,
        max_age_days=3.0,
    )
    report = SourcingReport(mode="advisories", feeds=(feed,), stale=("epss",))
    events: list[SerdeEvent] = []
    unregister = register_serde_event_listener(events.append)
    try:
        with _checkpointer(settings) as saver:
            typed = saver.serde.dumps_typed({"sourcing": report})
            back: dict[str, Any] = saver.serde.loads_typed(typed)
    finally:
        unregister()
    assert back["sourcing"] == report
    assert events == []
    assert not [r for r in caplog.records if r.name.startswith("langgraph")]
