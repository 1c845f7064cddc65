"""The published documents and their committed JSON Schema (``schemas/``).

(a) The committed schema files are exactly what the models generate: a change to a document
model without regenerating them (``python -m patchpilot.app.documents --write-schemas``) fails
here. (b) The documents the code emits (the report of a scan, of stored findings and of a patch
run; run documents completed, waiting, halted at the window, partial and failed) validate
against the committed files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patchpilot.app.documents import DOCUMENTS, render_schema, schema_file
from patchpilot.app.report import host_json, report_document
from patchpilot.app.runs import combine
from patchpilot.core.models import Finding, FixState, RiskAssessment, Severity, SSVCOutcome
from patchpilot.core.schedule import WindowSlot
from patchpilot.core.store import (
    ApprovalRecord,
    ApprovalStatus,
    HostResult,
    RunRecord,
    Store,
    finding_key,
)
from patchpilot.core.testing_models import ItemStatus
from patchpilot.graphs.run import RunResult, RunSnapshot, RunState
from patchpilot.graphs.run_document import run_document
from patchpilot.graphs.scan import HostStatus
from tests.schemas import assert_matches_schema, validator
from tests.unit.test_report_hosts import FACTS, UPDATE
from tests.unit.test_run_report import _done, _item, _plan, _snapshot, _testing

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_committed_schema_is_the_generated_one(name: str) -> None:
    path = schema_file(name)
    assert path.parent == REPO / "schemas"
    assert path.read_text(encoding="utf-8") == render_schema(name), (
        f"{path.name} is stale: run `python -m patchpilot.app.documents --write-schemas`"
    )
    validator(name)  # and it is a valid Draft 2020-12 schema


def test_write_schemas_writes_the_committed_files(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "patchpilot.app.documents",
            "--write-schemas",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    for name in DOCUMENTS:
        written = schema_file(name, tmp_path).read_text(encoding="utf-8")
        assert written == schema_file(name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the scan report


def _run_record(kind: str = "scan") -> RunRecord:
    return RunRecord(
        run_id="20260101T000000Z-abc123",
        kind=kind,
        target="all",
        params={"offline": True},
        status="completed",
        started_at=T0,
        finished_at=T0 + timedelta(minutes=1),
        summary={"hosts": 3, "findings": 1, "mode": "advisories"},
    )


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, str]:
    """A real store with a scan: one host reached (facts, a pending update, a finding with
    its risk), one unreachable, one refused."""
    home = tmp_path / "home"
    run_id = "20260101T000000Z-abc123"
    with Store(home / "patchpilot.db") as store:
        store.create_run(run_id, kind="scan", target="all", params={}, started_at=T0)
        store.save_host_snapshot(run_id, FACTS, [], [UPDATE], warnings=["no needrestart"])
        store.record_host_failure(run_id, "db-1", "HostConnectError", "db-1: refused")
        store.record_host_failure(run_id, "db-2", "HostKeyError", "db-2: key changed")
        finding = Finding(
            host="web-1",
            source_package="openssl",
            binary_packages=("libssl3", "openssl"),
            installed_source_version="3.0.20-1~deb12u2",
            advisory_id="DSA-5900-1",
            cves=("CVE-2026-0001",),
            fix=FixState.fixed("3.0.22-1~deb12u2"),
            fix_reachable=True,
            severity=Severity.HIGH,
            first_seen=T0,
        )
        store.replace_findings(run_id, "web-1", [finding])
        store.save_risk(
            run_id,
            [
                RiskAssessment(
                    finding_key=finding_key(finding),
                    score=81.3,
                    factors=(),
                    ssvc=SSVCOutcome.ATTEND,
                    due_date=date(2026, 2, 1),
                    rationale="internet-facing, fixed upstream",
                )
            ],
        )
        store.finish_run(run_id, status="completed", summary={"findings": 1, "mode": "advisories"})
    return home, run_id


def _cli_json(*args: str, home: Path) -> dict[str, Any]:
    env = {**os.environ, "PATCHPILOT_HOME": str(home)}
    res = subprocess.run(
        [sys.executable, "-m", "patchpilot", *args, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert res.returncode in (0, 3), res.stderr
    document: dict[str, Any] = json.loads(res.stdout)
    return document


def test_report_and_findings_printed_by_the_cli_match_the_schema(home: tuple[Path, str]) -> None:
    path, run_id = home
    report = _cli_json("report", run_id, home=path)
    assert {h["status"] for h in report["hosts"]} == {"ok", "unreachable", "failed"}
    assert report["findings"]
    assert_matches_schema(report)
    findings = _cli_json("findings", home=path)
    assert findings["run"] is None
    assert_matches_schema(findings)


def test_findings_of_an_empty_home_match_the_schema(tmp_path: Path) -> None:
    assert_matches_schema(_cli_json("findings", home=tmp_path / "empty"))


def test_report_documents_built_in_process_match_the_schema(home: tuple[Path, str]) -> None:
    path, run_id = home
    with Store(path / "patchpilot.db") as store:
        records = store.findings(run_id=run_id)
        hosts = store.host_results(run_id, details=True)
        feeds = store.feed_status()
    doc = report_document(
        run=_run_record(),
        records=records,
        feeds=feeds,
        hosts=[*hosts, HostResult(host="web-2", ok=True, facts=FACTS, pending=(UPDATE,))],
        mode="repository-metadata",
        hint="no feeds yet",
        generated_at=T0,
    )
    assert_matches_schema(doc)
    bare = FACTS.model_copy(update={"held_packages": None, "listening": None})
    assert_matches_schema(
        report_document(
            run=None, records=[], feeds=[], hosts=[HostResult(host="x", ok=True, facts=bare)]
        )
    )
    assert host_json(HostResult(host="x", ok=False, error_type="E", message="m"))["os"] is None


def test_the_report_of_a_patch_run_matches_the_schema() -> None:
    plan = _plan(_item("a"), _item("b"))
    run = run_document(
        RunResult(run_id="run-1", status="completed"),
        _snapshot(plan, _testing(plan, {"b": ItemStatus.BLOCKED})),
        [_done("a", "installed", "installed")],
        None,
    )
    scan = report_document(
        run=_run_record("run"),
        records=[],
        feeds=[],
        hosts=[HostResult(host="a", ok=True, facts=FACTS, pending=(UPDATE,))],
        generated_at=T0,
    )
    combined = combine(scan, run)
    assert combined["hosts"][0]["compliance"] == "installed"
    assert "compliance" not in scan["hosts"][0]
    assert_matches_schema(combined)


# --------------------------------------------------------------------------- run documents


def _approval(status: ApprovalStatus, decided: bool) -> ApprovalRecord:
    return ApprovalRecord(
        run_id="run-1",
        plan_id="plan-1",
        content_hash="0" * 64,
        status=status,
        reasons=("a is tagged prod (approvals.tags)",),
        payload={"items": []},
        requested_at=T0,
        expires_at=T0 + timedelta(hours=24),
        decided_at=T0 + timedelta(hours=1) if decided else None,
        decided_by="alice" if decided else None,
        comment="canary first" if decided else None,
        decided_via="cli" if decided else None,
        decided_words="patchpilot approve run-1" if decided else None,
    )


def _reached_or_not(gone: set[str]) -> RunState:
    plan = _snapshot(_plan(_item("a")))
    statuses = [
        HostStatus(host=n, stage="failed", error=f"{n}: connection refused on 127.0.0.1:1")
        if n in gone
        else HostStatus(host=n, stage="assessed")
        for n in ("a", "b", "c")
    ]
    return RunState.model_validate({**plan.state.model_dump(), "plan": None, "statuses": statuses})


def test_run_documents_match_the_schema() -> None:
    plan = _plan(_item("a"), _item("b"), _item("c", package="acme-agent"))
    tested = _snapshot(plan, _testing(plan, {"c": ItemStatus.BLOCKED}))
    docs = [
        run_document(
            RunResult(run_id="run-1", status="completed"),
            tested,
            [_done("a", "installed", "installed"), _done("b", "rolled_back", "failed", "health")],
            _approval("approved", decided=True),
        ),
        run_document(
            RunResult(run_id="run-1", status="awaiting_approval", waiting="approval"),
            tested,
            [],
            _approval("pending", decided=False),
        ),
        run_document(
            RunResult(run_id="run-1", status="rejected", reason="expired"),
            _snapshot(plan),
            [],
            _approval("expired", decided=True),
        ),
        run_document(RunResult(run_id="run-1", status="failed"), None, [], None),
    ]
    window = _snapshot(plan)
    window.state.window = WindowSlot(
        window="nightly",
        start=T0,
        end=T0 + timedelta(hours=4),
        last_start=T0 + timedelta(hours=3),
        timezone="UTC",
    )
    docs.append(
        run_document(
            RunResult(run_id="run-1", status="halted", waiting="window", reason="closed"),
            window,
            [],
            None,
        )
    )
    some_gone = RunResult(run_id="run-1", status="partial")
    all_gone = RunResult(run_id="run-1", status="failed", reason="none reached")
    for result, gone in ((some_gone, {"b"}), (all_gone, {"a", "b", "c"})):
        docs.append(
            run_document(
                result,
                RunSnapshot(state=_reached_or_not(gone), next=(), interrupts=()),
                [],
                None,
            )
        )
    assert [u["host"] for u in docs[-1]["unreachable"]] == ["a", "b", "c"]
    for doc in docs:
        assert_matches_schema(doc)


def test_a_document_off_its_contract_is_refused() -> None:
    plan = _plan(_item("a"))
    doc = run_document(RunResult(run_id="run-1", status="completed"), _snapshot(plan), [], None)
    doc["status"] = "done"  # not a run status
    with pytest.raises(AssertionError, match="status"):
        assert_matches_schema(doc)
    del doc["status"]
    doc["renamed_status"] = "completed"
    with pytest.raises(AssertionError):
        assert_matches_schema(doc)
