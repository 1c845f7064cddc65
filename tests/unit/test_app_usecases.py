"""Use cases of the application layer, called as any interface calls them (no CLI process).

Recording a decision is separate from continuing the run: :func:`record_decision` records and
audits and returns the decided record, and never drives the run graph.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patchpilot.app import approvals, gates, runs, scans
from patchpilot.app.approvals import DecisionSource, record_decision
from patchpilot.core.audit import AUDIT_FILE
from patchpilot.core.errors import InvalidInputError, UnknownTargetError
from patchpilot.core.models import Severity
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLI = DecisionSource(parser="cli", words="patchpilot approve run-1")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    return load_settings(None, home=str(tmp_path / "home"))


def _waiting_run(store: Store, *, expires_at: datetime) -> None:
    store.create_run("run-1", kind="run", target="all", params={}, started_at=T0)
    store.request_approval(
        "run-1",
        "plan-1",
        "0" * 64,
        ["web-1 is tagged prod"],
        {"items": []},
        requested_at=T0,
        expires_at=expires_at,
    )


def _audit(settings: Settings) -> list[dict[str, object]]:
    path = settings.home / AUDIT_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_bad_comment_is_refused_before_anything_is_recorded(settings: Settings) -> None:
    with Store(settings.store_path) as store:
        _waiting_run(store, expires_at=datetime.now(UTC) + timedelta(hours=1))
        with pytest.raises(InvalidInputError):
            record_decision(
                settings, store, "run-1", "approved", comment="\x1b[2J", source=CLI, actor="alice"
            )
        record = store.approval("run-1")
    assert record is not None
    assert record.status == "pending"


def test_unknown_runs_and_runs_that_never_asked(settings: Settings) -> None:
    with Store(settings.store_path) as store:
        with pytest.raises(UnknownTargetError, match="no run"):
            record_decision(
                settings, store, "nope", "approved", comment=None, source=CLI, actor="a"
            )
        store.create_run("run-2", kind="run", target="all", params={}, started_at=T0)
        with pytest.raises(UnknownTargetError, match="never asked"):
            record_decision(
                settings, store, "run-2", "rejected", comment=None, source=CLI, actor="a"
            )


def test_an_overdue_approval_is_recorded_expired_and_the_run_not_continued(
    settings: Settings,
) -> None:
    with Store(settings.store_path) as store:
        _waiting_run(store, expires_at=T0 + timedelta(hours=1))
        decided = record_decision(
            settings, store, "run-1", "approved", comment="ok", source=CLI, actor="alice"
        )
        run = store.get_run("run-1")
    assert decided.status == "expired"
    assert decided.decided_by == "patchpilot"
    assert run is not None
    assert run.status == "running"  # recorded only: nothing drove the run on
    assert [e["action"] for e in _audit(settings)] == ["approval.expired"]


def test_scan_use_cases_read_the_store(settings: Settings) -> None:
    with Store(settings.store_path) as store:
        with pytest.raises(UnknownTargetError):
            scans.latest_run_id(store)
        with pytest.raises(UnknownTargetError):
            scans.report(store, "nope")
        with pytest.raises(UnknownTargetError, match="--run"):
            scans.findings(store, run_id="nope")
        empty = scans.findings(store)
        store.create_run("scan-1", kind="scan", target="all", params={}, started_at=T0)
        assert scans.latest_run_id(store) == "scan-1"
        assert not gates.gate(store, "scan-1", fail_on=Severity.LOW, fail_on_score=None).failed
    assert empty.document["summary"]["findings"] == 0
    assert empty.hosts == ()


def test_every_use_case_takes_the_acting_identity() -> None:
    import inspect

    for use_case in (
        scans.start,
        scans.resume,
        runs.start,
        runs.resume,
        approvals.record_decision,
        approvals.decide,
        approvals.list_approvals,
    ):
        assert "actor" in inspect.signature(use_case).parameters, use_case.__qualname__
