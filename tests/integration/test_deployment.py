"""patchpilot.agents.deployment on the lab: install, verify, health-check, roll back, rate-control
halt.

Needs root (the shared ``lab`` fixture). Every test leaves the lab as it found it: the
``restore_lab`` finalizer puts acme-web 1.0.0 back on every host and re-holds it on db-1, since
other lab tests expect 1.0.0 everywhere with 1.2.0 pending and db-1 holding it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from patchpilot.agents.deployment import AnyCheck, deploy_host, deploy_ring, rejected_after_failure
from patchpilot.core.audit import AuditLog
from patchpilot.core.inventory import load_inventory
from patchpilot.core.models import Host
from patchpilot.core.plan import ComplianceState, PlanItem
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.schedule import RatePolicy, RebootPolicy
from patchpilot.core.settings import Settings, load_settings
from patchpilot.tools.health import HttpCheck

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here first breaks rewriting
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RESTORE = [
    "env",
    "DEBIAN_FRONTEND=noninteractive",
    "apt-get",
    "install",
    "-y",
    "--allow-downgrades",
    "--allow-change-held-packages",
    "acme-web=1.0.0",
]


def _dpkg(lab: LabHandle, host: str) -> str:
    """``dpkg-query`` of acme-web (version and status), as root inside the host."""
    done = lab.exec(host, ["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", "acme-web"])
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def restore_lab(lab: LabHandle) -> Iterator[None]:
    """Finalizer: acme-web 1.0.0 configured everywhere, held again on db-1."""
    yield
    for host in lab.hosts:
        lab.exec(host.name, ["dpkg", "--configure", "-a", "--force-confold"])
        if not _dpkg(lab, host.name).startswith("1.0.0 "):
            done = lab.exec(host.name, RESTORE)
            assert done.returncode == 0, done.stderr
        if host.name == "db-1" or "acme-web" in host.held:
            lab.exec(host.name, ["apt-mark", "hold", "acme-web"])
        assert _dpkg(lab, host.name).startswith("1.0.0 "), _dpkg(lab, host.name)
    assert _dpkg(lab, "db-1") == "1.0.0 hi"


@pytest.fixture
def hosts(lab: LabHandle) -> dict[str, Host]:
    """The lab inventory's hosts by name."""
    return dict(load_inventory(lab.inventory_path).hosts)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a temp home (the audit log goes there)."""
    return load_settings(home=tmp_path / "pp-home")


@pytest.fixture
def audit(settings: Settings) -> AuditLog:
    """The run's audit log."""
    return AuditLog.for_settings(settings, run_id="it-run", actor="tester")


def _checks(lab: LabHandle, name: str) -> list[AnyCheck]:
    port = lab.host(name).acme_port
    return [
        HttpCheck(
            url=f"http://127.0.0.1:{port}/health", body_contains="OK", retries=20, interval_s=0.25
        )
    ]


def _item(host: str, version: str) -> PlanItem:
    return PlanItem(
        host=host,
        package="acme-web",
        from_version="1.0.0",
        to_version=version,
        rule="test",
        reason="integration test",
    )


def test_upgrade_installs_and_stays_healthy(
    lab: LabHandle, hosts: dict[str, Host], settings: Settings, audit: AuditLog
) -> None:
    result = deploy_host(
        hosts["canary-1"],
        [_item("canary-1", "1.1.0")],
        settings,
        _checks(lab, "canary-1"),
        dry_run=False,
        reboot_policy=RebootPolicy.NEVER,
        audit=audit,
    )
    assert result.ok, result.reason
    (item,) = result.items
    assert (item.status, item.from_version, item.compliance) == (
        "installed",
        "1.0.0",
        ComplianceState.INSTALLED,
    )
    assert result.pre_versions == {"acme-web": "1.0.0"}
    assert result.post_versions == {"acme-web": "1.1.0"}
    assert all(c.ok for c in result.health_before + result.health_after)
    assert [r.service for r in result.restarts] == ["acme-web"]
    assert _dpkg(lab, "canary-1") == "1.1.0 ii"
    actions = [e.action for e in audit.read_events("it-run")]
    assert actions[0] == "deploy.started"
    assert "deploy.installed" in actions
    assert actions[-1] == "deploy.finished"


def test_broken_version_rolls_back_automatically(
    lab: LabHandle, hosts: dict[str, Host], settings: Settings, audit: AuditLog
) -> None:
    result = deploy_host(
        hosts["canary-1"],
        [_item("canary-1", "1.2.0")],
        settings,
        _checks(lab, "canary-1"),
        dry_run=False,
        reboot_policy=RebootPolicy.NEVER,
        audit=audit,
    )
    (item,) = result.items
    assert item.status == "rolled_back"
    assert item.cause == "health"
    assert item.compliance is ComplianceState.FAILED
    assert item.reason is not None
    assert "503" in item.reason
    assert "acme-web=1.0.0" in item.reason
    assert result.health_after
    assert not any(c.ok for c in result.health_after)
    assert result.health_after_rollback
    assert all(c.ok for c in result.health_after_rollback)
    assert result.post_versions == {"acme-web": "1.0.0"}
    assert _dpkg(lab, "canary-1") == "1.0.0 ii"
    assert rejected_after_failure([result]) == [("acme-web", "1.2.0")]
    actions = [e.action for e in audit.read_events("it-run")]
    assert {"health.failed", "rollback.started", "rollback.done"} <= set(actions)


def test_ring_halts_after_the_first_failure(
    lab: LabHandle, hosts: dict[str, Host], settings: Settings, audit: AuditLog
) -> None:
    base = load_policy(REPO / "configs" / "policy.yaml")
    schedule = base.schedule.model_copy(
        update={"waves": (2,), "rate": RatePolicy(max_concurrency=2, max_errors=0)}
    )
    policy: Policy = base.model_copy(update={"schedule": schedule})
    ring = [hosts["canary-1"], hosts["web-1"]]
    done: list[str] = []
    result = deploy_ring(
        ring,
        {name: [_item(name, "1.2.0")] for name in ("canary-1", "web-1")},
        settings,
        policy,
        lambda host: _checks(lab, host.name),
        dry_run=False,
        audit=audit,
        on_host_done=lambda d: done.append(d.host),
        ring="canary",
    )
    assert result.halted
    assert result.reason is not None
    assert "health check failed on canary-1" in result.reason
    canary, web = result.hosts
    assert canary.status == "rolled_back"
    assert web.status == "pending"
    assert web.items[0].cause == "not-started"
    assert result.reject == [("acme-web", "1.2.0")]
    assert result.waves == (("canary-1", "web-1"),)
    assert done == ["canary-1", "web-1"]
    assert _dpkg(lab, "canary-1") == "1.0.0 ii"
    assert _dpkg(lab, "web-1") == "1.0.0 ii"
    events = audit.read_events("it-run")
    assert not [e for e in events if e.host == "web-1" and e.action == "deploy.started"]
    assert "ring.halted" in [e.action for e in events]


def test_deploying_twice_is_a_noop(
    lab: LabHandle, hosts: dict[str, Host], settings: Settings, audit: AuditLog
) -> None:
    def once() -> tuple[str, str | None]:
        result = deploy_host(
            hosts["web-1"],
            [_item("web-1", "1.1.0")],
            settings,
            _checks(lab, "web-1"),
            dry_run=False,
            reboot_policy=RebootPolicy.NEVER,
            audit=audit,
        )
        return result.items[0].status, result.items[0].reason

    assert once()[0] == "installed"
    assert once() == ("skipped", "already at the target")
    assert _dpkg(lab, "web-1") == "1.1.0 ii"


def test_dry_run_changes_nothing(
    lab: LabHandle, hosts: dict[str, Host], settings: Settings, audit: AuditLog
) -> None:
    before = {h.name: _dpkg(lab, h.name) for h in lab.hosts}
    result = deploy_host(
        hosts["canary-1"],
        [_item("canary-1", "1.2.0")],
        settings,
        _checks(lab, "canary-1"),
        dry_run=True,
        reboot_policy=RebootPolicy.NEVER,
        audit=audit,
    )
    assert [(i.status, i.cause) for i in result.items] == [("pending", "dry-run")]
    assert result.install is None
    assert {h.name: _dpkg(lab, h.name) for h in lab.hosts} == before
