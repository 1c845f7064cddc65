"""Compatibility testing on the real lab (Debian 12 hosts over SSH): simulation only.

Lab state used (see ``patchpilot.lab``): every host has acme-web 1.0.0 (the lab repository
offers 1.1.0, 1.2.0 and 1.3.0); db-1 holds acme-web and has acme-agent 1.0.0 with
acme-plugin-legacy, which acme-agent 2.0.0 removes. Nothing may change on any host: the dpkg
database and the holds are compared before and after every simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from patchpilot.agents import testing
from patchpilot.agents.planning import approval_required
from patchpilot.core.inventory import load_inventory
from patchpilot.core.models import Host
from patchpilot.core.plan import PatchPlan, PlanItem, PredictedEffects
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.settings import load_settings
from patchpilot.core.store import Store
from patchpilot.core.testing_models import Classification, ItemStatus, RiskLevel, TestReport

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here first breaks rewriting
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _state(lab: LabHandle) -> dict[str, tuple[str, str]]:
    """Per host: every package's version and dpkg status, and the held packages."""
    state = {}
    for host in lab.hosts:
        dpkg = lab.exec(
            host.name, ["dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n"]
        )
        holds = lab.exec(host.name, ["apt-mark", "showhold"])
        assert dpkg.returncode == 0, dpkg.stderr
        assert holds.returncode == 0, holds.stderr
        state[host.name] = (dpkg.stdout, holds.stdout)
    return state


def _version(state: dict[str, tuple[str, str]], host: str, package: str) -> str | None:
    for line in state[host][0].splitlines():
        name, version, _ = line.split(" ", 2)
        if name == package:
            return version
    return None


def _item(host: str, package: str, before: str | None, after: str) -> PlanItem:
    return PlanItem(
        host=host,
        package=package,
        from_version=before,
        to_version=after,
        rule="approved-packages",
        reason="integration test",
    )


@dataclass(frozen=True)
class Run:
    """Everything the module's simulations produced."""

    hosts: list[Host]
    policy: Policy
    plan_web: PatchPlan
    web: TestReport
    agent: TestReport
    broken: TestReport
    before: dict[str, tuple[str, str]]
    after: dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def run(lab: LabHandle, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Snapshot the hosts, run three compatibility tests, snapshot again."""
    home = tmp_path_factory.mktemp("testing-home")
    settings = load_settings(home=home / "pp-home")
    policy = load_policy(REPO / "configs" / "policy.yaml")
    hosts = list(load_inventory(lab.inventory_path).hosts.values())
    before = _state(lab)
    for name in ("canary-1", "db-1"):
        assert _version(before, name, "acme-web") == "1.0.0", "lab precondition: acme-web 1.0.0"
    assert _version(before, "db-1", "acme-agent") == "1.0.0"
    assert _version(before, "db-1", "acme-plugin-legacy") is not None
    assert "acme-web" in before["db-1"][1].split()

    plan_web = PatchPlan.create(
        run_id="it-web",
        created_at=NOW,
        items=[
            _item("canary-1", "acme-web", "1.0.0", "1.1.0"),
            _item("db-1", "acme-web", "1.0.0", "1.1.0"),
        ],
    )
    plan_agent = PatchPlan.create(
        run_id="it-agent", created_at=NOW, items=[_item("db-1", "acme-agent", "1.0.0", "2.0.0")]
    )
    plan_broken = PatchPlan.create(
        run_id="it-broken",
        created_at=NOW,
        items=[_item("canary-1", "acme-web", "1.0.0", "1.2.0")],
    )
    with Store(home / "store.db") as store:
        store.record_outcome(
            "run-earlier",
            "web-1",
            "acme-web",
            "1.0.0",
            "1.2.0",
            "rollback",
            "health check failed: HTTP 500",
        )
        web = testing.test_plan(plan_web, hosts, settings, policy, history=store)
        agent = testing.test_plan(plan_agent, hosts, settings, policy, history=store)
        broken = testing.test_plan(plan_broken, hosts, settings, policy, history=store)
    return Run(hosts, policy, plan_web, web, agent, broken, before, _state(lab))


def test_simulation_changes_nothing_on_any_host(run: Run) -> None:
    assert run.after == run.before


def test_plain_upgrade_on_canary_is_upgrades_only_and_low(run: Run) -> None:
    host = run.web.host("canary-1")
    assert host.status == "simulated", host.error
    pred = run.web.item("canary-1", "acme-web")
    assert pred.status is ItemStatus.READY
    assert pred.classifications[0] is Classification.UPGRADES_ONLY
    assert not {Classification.REMOVALS, Classification.HELD} & set(pred.classifications)
    assert pred.risk is RiskLevel.LOW, pred.reasons
    assert not pred.blocked
    assert host.extra_changes == ()


def test_held_package_on_db1_is_blocked_pending_approval(run: Run) -> None:
    pred = run.web.item("db-1", "acme-web")
    assert Classification.HELD in pred.classifications
    assert pred.status is ItemStatus.BLOCKED
    assert pred.blocked
    assert pred.needs_approval
    assert pred.risk is RiskLevel.HIGH
    effects = run.web.predicted_effects()
    assert effects["db-1"] == PredictedEffects(held=True)
    reasons = approval_required(run.plan_web, run.hosts, run.policy, effects)
    assert "db-1: the change touches held packages (approvals.on_held)" in reasons


def test_removal_on_db1_is_blocked(run: Run) -> None:
    host = run.agent.host("db-1")
    assert host.status == "simulated", host.error
    assert host.removals == ("acme-plugin-legacy",)
    assert [(e.package, e.action) for e in host.extra_changes] == [("acme-plugin-legacy", "remove")]
    pred = run.agent.item("db-1", "acme-agent")
    assert Classification.REMOVALS in pred.classifications
    assert pred.status is ItemStatus.BLOCKED
    assert pred.needs_approval
    assert pred.risk is RiskLevel.HIGH
    assert any("acme-plugin-legacy" in r for r in pred.reasons)
    assert run.agent.predicted_effects()["db-1"].removals


def test_recorded_rollback_elsewhere_makes_the_version_high(run: Run) -> None:
    pred = run.broken.item("canary-1", "acme-web")
    assert pred.status is ItemStatus.READY  # apt itself sees nothing wrong with 1.2.0
    assert pred.risk is RiskLevel.HIGH
    assert any("web-1" in r and "run-earlier" in r and "HTTP 500" in r for r in pred.reasons)
