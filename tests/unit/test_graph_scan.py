"""The scan graph, whole, on scripted Debian hosts (``ScanContext.transport_factory``).

Real graph, store and checkpointer; hosts are :class:`tests.fakes.FakeDebianHost`; a killed
scan is a child process that dies by SIGKILL at a failpoint and is resumed here. The lab test
tests/integration/test_scan_resume.py proves the same on real hosts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from patchpilot.core.models import Host
from patchpilot.core.policy import load_policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.graphs.scan import ScanContext, resume_scan, start_scan
from tests.fakes import FakeDebianHost, fleet_factory

REPO = Path(__file__).resolve().parents[2]
HOSTS = [
    Host(name="web-1", address="127.0.0.1", tags=["web", "prod"], criticality=4),
    Host(name="db-1", address="127.0.0.1", tags=["db", "prod"], criticality=5),
]


def make_fleet(unreachable: frozenset[str] = frozenset()) -> dict[str, FakeDebianHost]:
    return {
        h.name: FakeDebianHost(
            h.name,
            {"acme-web": "1.0.0", "openssl": "3.0.1-1"},
            {"acme-web": ["1.0.0", "1.1.0"], "openssl": ["3.0.1-1", "3.0.2-1"]},
            security=frozenset({"openssl"}),
            unreachable=h.name in unreachable,
        )
        for h in HOSTS
    }


def scan(
    home: Path, *, run_id: str = "scan-1", resume: bool = False, **fleet: Any
) -> dict[str, Any]:
    settings = Settings(home=home)
    with Store(settings.store_path) as store:
        context = ScanContext(
            settings=settings,
            store=store,
            policy=load_policy(REPO / "configs" / "policy.yaml"),
            transport_factory=fleet_factory(make_fleet(**fleet)),
        )
        if resume:
            return resume_scan(run_id, context)
        return start_scan(HOSTS, context, target="all", offline=True, run_id=run_id)[1]


def findings(home: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's findings as JSON, without the times that differ between runs."""
    with Store(Settings(home=home).store_path) as store:
        rows = []
        for record in store.findings(run_id=run_id):
            row = record.finding.model_dump(mode="json", exclude={"first_seen"})
            for source in row["provenance"]:
                source.pop("fetched_at", None)
            rows.append(row)
        return sorted(rows, key=lambda f: (f["host"], f["source_package"]))


def test_a_scan_on_scripted_hosts_finds_the_security_updates(tmp_path: Path) -> None:
    summary = scan(tmp_path / "home")
    assert summary["hosts_ok"] == 2
    assert summary["mode"] == "repository-metadata"
    found = findings(tmp_path / "home", "scan-1")
    assert [(f["host"], f["source_package"]) for f in found] == [
        ("db-1", "openssl"),
        ("web-1", "openssl"),
    ]
    assert all(f["fix"]["version"] == "3.0.2-1" and f["fix_reachable"] for f in found)
    assert [a["task"] for a in summary["assistance"]] == ["prioritization"]


def test_an_unreachable_host_is_reported_and_the_others_complete(tmp_path: Path) -> None:
    summary = scan(tmp_path / "home", unreachable=frozenset({"db-1"}))
    assert summary["hosts_failed"] == ["db-1"]
    assert summary["hosts_ok"] == 1
    with Store(Settings(home=tmp_path / "home").store_path) as store:
        run = store.get_run("scan-1")
        assert run is not None
        assert run.status == "partial"


_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.unit.test_graph_scan import scan
scan(Path({home!r}), run_id={run_id!r})
"""


@pytest.mark.parametrize(
    "point", ["scan.discovered", "scan.sourced", "scan.assessed#2", "scan.prioritized"]
)
def test_a_scan_killed_at_a_failpoint_resumes_to_the_same_findings(
    tmp_path: Path, point: str
) -> None:
    reference = scan(tmp_path / "ref")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHPILOT_")}
    env |= {"PATCHPILOT_HOME": str(home), "PATCHPILOT_FAILPOINTS": point}
    code = _CHILD.format(repo=str(REPO), home=str(home), run_id="scan-1")
    child = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    with Store(Settings(home=home).store_path) as store:
        run = store.get_run("scan-1")
        assert run is not None
        assert run.status == "running"
    summary = scan(home, resume=True)
    assert dict(summary.items()) == reference
    assert findings(home, "scan-1") == findings(tmp_path / "ref", "scan-1")


def test_a_scan_step_that_raises_fails_the_scan_and_resume_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(was tests/integration/test_scan_resume.py, on this machine)"""
    from patchpilot.core.failpoints import FailpointError

    home = tmp_path / "home"
    monkeypatch.setenv("PATCHPILOT_FAILPOINTS", "scan.sourced:raise")
    with pytest.raises(FailpointError):
        scan(home)
    with Store(Settings(home=home).store_path) as store:
        run = store.get_run("scan-1")
        assert run is not None
        assert run.status == "failed"  # never left "running"
        assert run.summary is not None
        assert run.summary["reason"].startswith("source failed: FailpointError: failpoint ")
    monkeypatch.delenv("PATCHPILOT_FAILPOINTS")
    summary = scan(home, resume=True)
    assert summary["hosts_ok"] == 2
    with Store(Settings(home=home).store_path) as store:
        run = store.get_run("scan-1")
        assert run is not None
        assert run.status == "completed"


def test_with_no_feeds_pending_security_updates_fail_the_gate(tmp_path: Path) -> None:
    """Issue 13: a gate fails closed: without feeds every severity is unknown."""
    from patchpilot.app.gates import UnknownSeverity, gate
    from patchpilot.core.models import Severity

    home = tmp_path / "home"
    scan(home)
    with Store(Settings(home=home).store_path) as store:
        verdict = gate(store, "scan-1", fail_on=Severity.LOW, fail_on_score=None)
        assert verdict.failed
        assert verdict.unknown_severity == 2
        opted_out = gate(
            store,
            "scan-1",
            fail_on=Severity.LOW,
            fail_on_score=None,
            unknown_severity=UnknownSeverity.IGNORE,
        )
        assert not opted_out.failed


def test_a_held_vulnerable_package_stays_visible_as_held(tmp_path: Path) -> None:
    """Issue 13: apt leaves held packages out of its upgrades; their exposure must not vanish."""
    from datetime import UTC, datetime

    from patchpilot.agents.planning import build_plan
    from patchpilot.core.models import FixStatus, Host
    from patchpilot.core.plan import ExclusionReason

    home = tmp_path / "home"
    settings = Settings(home=home)
    fleet = make_fleet()
    fleet["db-1"].held = frozenset({"openssl"})
    with Store(settings.store_path) as store:
        context = ScanContext(
            settings=settings,
            store=store,
            policy=load_policy(REPO / "configs" / "policy.yaml"),
            transport_factory=fleet_factory(fleet),
        )
        start_scan(HOSTS, context, target="all", offline=True, run_id="scan-1")
        stored = store.findings(run_id="scan-1")
        records = {r.finding.host: r.finding for r in stored}
        assert records["web-1"].fix.status is FixStatus.FIXED
        assert records["web-1"].actionable
        held = records["db-1"]
        assert (held.source_package, held.fix.status, held.fixed_version) == (
            "openssl",
            FixStatus.HELD,
            "3.0.2-1",
        )
        assert not held.actionable
        snapshot = store.load_host_snapshot("scan-1", "db-1")
        assert snapshot is not None
        (update,) = [u for u in snapshot.pending if u.name == "openssl"]
        assert update.held
        assert update.candidate_version == "3.0.2-1"
        plan = build_plan(
            "run-1",
            stored,
            {"db-1": snapshot.pending},
            [Host(name="db-1", address="127.0.0.1")],
            load_policy(REPO / "configs" / "policy.yaml"),
            now=datetime.now(UTC),
        )
        assert all(i.package != "openssl" for i in plan.items)
        (excluded,) = [e for e in plan.excluded if e.package == "openssl"]
        assert excluded.exclusion is ExclusionReason.HELD
        assert "held on db-1" in excluded.reason
