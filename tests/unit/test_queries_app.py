"""The question tools that read a patch run's document (patchpilot/app/questions.py).

Same store as tests/unit/test_queries.py; the run document is built in memory from a real
plan and run state with :func:`patchpilot.graphs.run_document.run_document` (the checkpoint
is the graph's business) and passed as ``QueryContext.extra["run_document"]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchpilot.app.questions import CATALOG
from patchpilot.core.models import Host
from patchpilot.core.plan import ExcludedItem, ExclusionReason, PatchPlan, PlanItem
from patchpilot.core.policy import load_policy
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import Store
from patchpilot.graphs.run import RunResult, RunSnapshot, RunState
from patchpilot.graphs.run_document import run_document
from patchpilot.tools.queries import QueryContext, call_tool
from tests.unit.test_queries import NOW, PATCH, ask, context_for, fill

__all__ = ["document", "with_document"]


def document(settings: Settings, store: Store) -> dict[str, Any]:
    """PATCH's document: libssl3 on web-1 planned, acme-web on db-1 left out (held)."""
    plan = PatchPlan.create(
        run_id=PATCH,
        created_at=NOW,
        items=[
            PlanItem(
                host="web-1",
                package="libssl3",
                from_version="3.0.1",
                to_version="3.0.2",
                rule="security",
                reason="security update",
            )
        ],
        excluded=[
            ExcludedItem(
                host="db-1",
                package="acme-web",
                from_version="1.0.0",
                to_version="1.1.0",
                exclusion=ExclusionReason.HELD,
                reason="db-1 holds acme-web (apt-mark hold)",
            ),
            ExcludedItem(
                host="web-1",
                package="curl",
                from_version="7.88.1",
                to_version="7.88.1-10+deb12u8",
                exclusion=ExclusionReason.NON_SECURITY,
                reason="not a security update; the baseline excludes those",
            ),
        ],
    )
    hosts = [Host(name=n, address="127.0.0.1") for n in ("web-1", "db-1")]
    state = RunState(
        run_id=PATCH,
        target="prod",
        hosts=hosts,
        policy=load_policy(settings.policy_path),
        plan=plan,
        approval_reasons=["requested in chat"],
    )
    result = RunResult(
        run_id=PATCH, status="awaiting_approval", reason="requested in chat", waiting="approval"
    )
    snapshot = RunSnapshot(state=state, next=(), interrupts=())
    return run_document(result, snapshot, [], store.approval(PATCH))


def with_document(settings: Settings, store: Store) -> QueryContext:
    doc = document(settings, store)
    return context_for(
        settings, store, run_document=lambda run_id: doc if run_id == PATCH else None
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.store_path) as opened:
        fill(opened)
        yield opened


@pytest.fixture
def context(settings: Settings, store: Store) -> QueryContext:
    return with_document(settings, store)


def test_the_app_tools_join_the_one_catalog() -> None:
    assert {"compliance", "run_details", "why_not_patched", "findings"} <= set(CATALOG)


def test_why_db1_was_not_upgraded_is_its_hold(context: QueryContext) -> None:
    result = ask(
        context, "why_not_patched", host="db-1", package={"name": "acme-web", "version": "1.1.0"}
    )
    sources = [r["source"] for r in result.rows]
    assert sources[:2] == ["hold", "plan"]
    assert result.rows[1]["exclusion"] == "held"
    assert result.text.splitlines()[1].startswith("- db-1 holds acme-web (apt-mark hold)")
    assert "left acme-web 1.1.0 out: held" in result.text
    assert result.understood_as == "why db-1 was not upgraded to acme-web 1.1.0"


def test_why_names_the_approval_a_planned_item_waits_for(context: QueryContext) -> None:
    result = ask(context, "why_not_patched", host="web-1", package={"name": "openssl"})
    assert [r["source"] for r in result.rows] == ["deployment", "approval"]
    assert "planned libssl3 3.0.2: pending (waiting for approval)" in result.text
    assert "approval of run" in result.text
    assert "is pending" in result.text


def test_why_names_the_exclusion_and_a_baseline_rejection(
    context: QueryContext, store: Store
) -> None:
    store.reject_version("curl", "7.88.1-10+deb12u8", reason="health check failed", run_id=PATCH)
    result = ask(context, "why_not_patched", host="web-1", package={"name": "curl"})
    assert [r["source"] for r in result.rows] == ["plan", "rejection"]
    assert "non-security" in result.text
    assert "patchpilot baseline clear curl=7.88.1-10+deb12u8" in result.text


def test_why_says_when_the_version_is_not_offered(context: QueryContext) -> None:
    result = ask(
        context, "why_not_patched", host="web-1", package={"name": "libssl3", "version": "9.9"}
    )
    assert any("offer libssl3 3.0.2, not 9.9" in r["reason"] for r in result.rows)


def test_why_with_bad_arguments_is_an_error(context: QueryContext) -> None:
    result = call_tool(context, "why_not_patched", {"package": {"name": "acme-web"}})
    assert result.error is not None
    assert "host" in result.error


def test_run_details_lists_items_exclusions_and_the_approval(context: QueryContext) -> None:
    result = ask(context, "run_details")
    kinds = [r["kind"] for r in result.rows]
    assert kinds == ["item", "excluded", "excluded", "approval"]
    assert "db-1: acme-web 1.1.0: held (db-1 holds acme-web (apt-mark hold))" in result.text
    assert "Approval pending" in result.text
    assert result.understood_as == f"what run {PATCH} did and why"


def test_run_details_without_a_checkpoint_says_so(settings: Settings, store: Store) -> None:
    result = ask(context_for(settings, store), "run_details", run_id=PATCH)  # the real reader
    assert "checkpoint is gone" in result.text
    unknown = call_tool(context_for(settings, store), "run_details", {"run_id": "nope"})
    assert unknown.error is not None
    assert "not a run id" in unknown.error


def test_compliance_per_host(context: QueryContext) -> None:
    result = ask(context, "compliance")
    rows = {r["host"]: r for r in result.rows}
    assert rows["web-1"]["sla"] == "overdue"
    assert rows["web-1"]["overdue"] == 1
    assert rows["db-1"]["next_due"] is not None
    assert rows["db-1"]["compliance"] == "missing"
    assert rows["canary-1"]["sla"] == "clean"
    assert rows["canary-1"]["run_id"] is None
    overdue = ask(context, "compliance", overdue_only=True)
    assert [r["host"] for r in overdue.rows] == ["web-1"]
