"""Compatibility testing (patchpilot.agents.testing): classification, risk, policy blocks and
history.

Hermetic: simulations are the recorded apt outputs of ``tests/fixtures/facts/AptSimulateInstall``
parsed by the real fact, and ``test_plan`` runs over a scripted transport.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from patchpilot.agents import testing
from patchpilot.agents.planning import approval_required
from patchpilot.core.errors import HostConnectError
from patchpilot.core.models import CommandResult, Host
from patchpilot.core.plan import PatchPlan, PlanItem, PredictedEffects
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.core.testing_models import (
    Classification,
    ItemStatus,
    Outcome,
    OutcomeStatus,
    RiskLevel,
    TestReport,
)
from patchpilot.tools.facts.apt_simulate import AptSimulateInstall, ConffileStatus, SimulationResult
from patchpilot.tools.transport.base import Transport, TransportFactory
from tests.fakes import ScriptedTransport

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "facts" / "AptSimulateInstall"
POLICY = load_policy(REPO / "configs" / "policy.yaml")
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MD5 = "a09d7648c92beda3d1712b439960862d"


def _record(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{case}.json").read_text(encoding="utf-8"))
    return data


def sim(case: str, **update: Any) -> SimulationResult:
    """The recorded simulation ``case`` parsed by the real fact (plus ``update``)."""
    data = _record(case)
    fact = AptSimulateInstall(**data["fact_args"])
    result = fact.parse(
        CommandResult(
            host="h",
            argv=tuple(data["command"]),
            exit_code=data["exit_code"],
            stdout=data["stdout"],
            stderr=data["stderr"],
        )
    )
    return result.model_copy(update=update) if update else result


def item(host: str, package: str, before: str | None, after: str) -> PlanItem:
    return PlanItem(
        host=host,
        package=package,
        from_version=before,
        to_version=after,
        rule="approved-packages",
        reason="test",
    )


def policy(**approvals: Any) -> Policy:
    return POLICY.model_copy(update={"approvals": POLICY.approvals.model_copy(update=approvals)})


def outcome(host: str, status: str, version: str = "1.2.0", error: str | None = None) -> Outcome:
    return Outcome(
        run_id="run-7",
        host=host,
        package="acme-web",
        from_version="1.0.0",
        to_version=version,
        status=OutcomeStatus(status),
        error=error,
        at=NOW,
    )


WEB_11 = item("canary-1", "acme-web", "1.0.0", "1.1.0")


# --------------------------------------------------------------------------- classification


def test_upgrade_only_is_low_and_ready() -> None:
    result = sim("debian12_lab_upgrade_only")
    host = testing.classify_host("canary-1", [WEB_11], result, POLICY)
    assert host.status == "simulated"
    assert host.classifications == (Classification.UPGRADES_ONLY,)
    assert host.extra_changes == ()
    (pred,) = host.items
    assert pred.status is ItemStatus.READY
    assert pred.risk is RiskLevel.LOW
    assert not pred.blocked
    assert not pred.needs_approval
    assert pred.reasons == ("upgrades only: nothing new, removed, held or downgraded",)
    assert host.effects == PredictedEffects()


def test_own_service_restart_is_classified_but_stays_low() -> None:
    result = sim(
        "debian12_lab_upgrade_only",
        services={"acme-web": ("acme-web",)},
        conffiles=(
            ConffileStatus(
                package="acme-web",
                path="/etc/init.d/acme-web",
                recorded_md5=MD5,
                current_md5=MD5,
                state="unchanged",
            ),
        ),
    )
    (pred,) = testing.classify_host("canary-1", [WEB_11], result, POLICY).items
    assert pred.classifications == (
        Classification.UPGRADES_ONLY,
        Classification.SERVICES_RESTART,
    )
    assert pred.services == ("acme-web",)
    assert pred.risk is RiskLevel.LOW
    assert any("restarts acme-web" in r for r in pred.reasons)


def test_dependency_service_restart_and_conffile_prompt_are_medium() -> None:
    base = sim("debian12_lab_upgrade_only")
    dep = base.upgrades[0].model_copy(
        update={"name": "libacme", "from_version": "1.0", "to_version": "1.1"}
    )
    result = base.model_copy(
        update={
            "upgrades": (*base.upgrades, dep),
            "services": {"acme-web": (), "libacme": ("acme-helper",)},
            "conffiles": (
                ConffileStatus(
                    package="acme-web",
                    path="/etc/acme-web.conf",
                    recorded_md5=MD5,
                    current_md5="0" * 32,
                    state="modified",
                ),
            ),
        }
    )
    host = testing.classify_host("canary-1", [WEB_11], result, POLICY)
    (pred,) = host.items
    assert Classification.CONFFILE_PROMPT in pred.classifications
    assert Classification.SERVICES_RESTART in pred.classifications
    assert pred.risk is RiskLevel.MEDIUM
    assert pred.status is ItemStatus.READY
    assert host.modified_conffiles == ("/etc/acme-web.conf",)
    assert [(e.package, e.action) for e in host.extra_changes] == [("libacme", "upgrade")]
    assert any("acme-helper" in r for r in pred.reasons)
    assert any("also upgrades libacme 1.0 -> 1.1" in r for r in pred.reasons)


def test_held_blocks_and_needs_approval() -> None:
    host = testing.classify_host(
        "db-1", [item("db-1", "acme-web", "1.0.0", "1.1.0")], sim("debian12_lab_held"), POLICY
    )
    (pred,) = host.items
    assert pred.classifications == (Classification.HELD,)
    assert pred.status is ItemStatus.BLOCKED
    assert pred.blocked
    assert pred.needs_approval
    assert pred.risk is RiskLevel.HIGH
    assert pred.reasons[0].startswith("blocked: ")
    assert "approvals.on_held" in pred.reasons[0]
    assert "acme-web is held (apt-mark hold)" in pred.reasons
    assert host.held == ("acme-web",)
    assert host.effects == PredictedEffects(held=True)


def test_held_allowed_by_policy_is_not_blocked_but_high() -> None:
    (pred,) = testing.classify_host(
        "db-1",
        [item("db-1", "acme-web", "1.0.0", "1.1.0")],
        sim("debian12_lab_held"),
        policy(on_held=False),
    ).items
    assert pred.status is ItemStatus.READY
    assert not pred.blocked
    assert not pred.needs_approval
    assert pred.risk is RiskLevel.HIGH
    assert any("approvals.on_held is false" in r for r in pred.reasons)


def test_removals_block_every_item_of_the_transaction() -> None:
    result = sim("debian12_lab_removal")
    items = [item("db-1", "acme-agent", "1.0.0", "2.0.0")]
    host = testing.classify_host("db-1", items, result, POLICY)
    (pred,) = host.items
    assert pred.classifications == (Classification.REMOVALS,)
    assert pred.status is ItemStatus.BLOCKED
    assert pred.needs_approval
    assert pred.risk is RiskLevel.HIGH
    assert "the host's transaction removes acme-plugin-legacy 1.0.0" in pred.reasons
    assert host.removals == ("acme-plugin-legacy",)
    assert [(e.package, e.action, e.from_version) for e in host.extra_changes] == [
        ("acme-plugin-legacy", "remove", "1.0.0")
    ]
    allowed = testing.classify_host("db-1", items, result, policy(on_removals=False)).items[0]
    assert allowed.status is ItemStatus.READY
    assert allowed.risk is RiskLevel.HIGH


def test_new_packages_are_medium_and_listed_as_extra_changes() -> None:
    result = sim("debian12_lab_new_install_with_deps")
    curl = item("canary-1", "curl", None, "7.88.1-10+deb12u15")
    host = testing.classify_host("canary-1", [curl], result, POLICY)
    (pred,) = host.items
    assert pred.classifications == (Classification.NEW_PACKAGES,)
    assert pred.risk is RiskLevel.MEDIUM
    assert pred.status is ItemStatus.READY
    assert len(host.new_packages) == 13
    assert len(host.extra_changes) == 12  # curl itself is the plan item
    assert {e.action for e in host.extra_changes} == {"install"}


def test_reboot_kept_back_reinstall_and_purge() -> None:
    result = sim("synthetic_kept_back_purge_reinstall_reboot")
    items = [
        item("web-1", "libc6", "2.36-9+deb12u4", "2.36-9+deb12u7"),
        item("web-1", "linux-image-amd64", "6.1.76-1", "6.1.90-1"),
        item("web-1", "tzdata", "2024a-0+deb12u1", "2024a-0+deb12u1"),
    ]
    host = testing.classify_host("web-1", items, result, POLICY)
    assert Classification.REBOOT_NEEDED in host.classifications
    assert host.effects == PredictedEffects(removals=True, reboot=True)
    libc6 = next(i for i in host.items if i.package == "libc6")
    assert libc6.risk is RiskLevel.HIGH
    assert libc6.status is ItemStatus.BLOCKED
    assert any("reboot is likely" in r for r in libc6.reasons)
    kernel = next(i for i in host.items if i.package == "linux-image-amd64")
    assert kernel.status is ItemStatus.FAILED
    assert "keeps linux-image-amd64 back" in kernel.reasons[0]
    assert {(e.package, e.action) for e in host.extra_changes} == {
        ("linux-image-6.1.0-21-amd64", "install"),
        ("old-tool", "remove"),
    }


def test_already_current_and_not_installed() -> None:
    current = testing.classify_host(
        "canary-1",
        [item("canary-1", "acme-web", "1.0.0", "1.0.0")],
        sim("debian12_lab_already_current"),
        POLICY,
    ).items[0]
    assert current.status is ItemStatus.ALREADY_CURRENT
    assert current.risk is RiskLevel.LOW
    skipped = testing.classify_host(
        "canary-1",
        [item("canary-1", "acme-agent", "1.0.0", "2.0.0")],
        sim("debian12_lab_not_installed_skipped"),
        POLICY,
    ).items[0]
    assert skipped.status is ItemStatus.FAILED
    assert skipped.risk is RiskLevel.HIGH
    assert "--only-upgrade skips it" in skipped.reasons[0]


def test_planned_downgrade_versus_unplanned() -> None:
    result = sim("debian12_lab_rollback_downgrade")
    rollback = item("canary-1", "acme-web", "1.1.0", "1.0.0")
    assert testing.is_downgrade(rollback)
    assert not testing.is_downgrade(WEB_11)
    pred = testing.classify_host("canary-1", [rollback], result, POLICY).items[0]
    assert pred.classifications == (Classification.DOWNGRADES,)
    assert pred.risk is RiskLevel.LOW
    assert any("planned downgrade 1.1.0 -> 1.0.0" in r for r in pred.reasons)
    other = item("canary-1", "acme-agent", "1.0.0", "2.0.0")
    up = sim("debian12_lab_removal").upgrades[0]
    mixed = result.model_copy(update={"upgrades": (up,)})
    preds = testing.classify_host("canary-1", [other], mixed, POLICY).items
    assert preds[0].risk is RiskLevel.MEDIUM
    assert any("apt would also downgrade acme-web" in r for r in preds[0].reasons)


def test_wrong_version_is_a_failed_prediction() -> None:
    pred = testing.classify_host(
        "canary-1",
        [item("canary-1", "acme-web", "1.0.0", "1.2.0")],
        sim("debian12_lab_upgrade_only"),
        POLICY,
    ).items[0]
    assert pred.status is ItemStatus.FAILED
    assert pred.reasons[0] == "apt would install acme-web 1.1.0, not 1.2.0"


# --------------------------------------------------------------------------- history


def test_recorded_failure_of_the_same_version_is_high() -> None:
    web_12 = item("canary-1", "acme-web", "1.0.0", "1.2.0")
    history = {
        ("acme-web", "1.2.0"): (
            outcome("web-1", "failure", error="health check failed"),
            outcome("web-2", "success"),
        )
    }
    result = sim("debian12_lab_upgrade_only").model_copy(
        update={
            "upgrades": (
                sim("debian12_lab_upgrade_only")
                .upgrades[0]
                .model_copy(update={"to_version": "1.2.0"}),
            )
        }
    )
    pred = testing.classify_host("canary-1", [web_12], result, POLICY, history=history).items[0]
    assert pred.risk is RiskLevel.HIGH
    assert pred.status is ItemStatus.READY
    assert any(
        "failed on web-1 in run run-7" in r and "health check failed" in r for r in pred.reasons
    )
    assert any("installed successfully on web-2" in r for r in pred.reasons)


def test_rollback_counts_and_other_versions_do_not() -> None:
    history = {
        ("acme-web", "1.1.0"): (outcome("web-1", "rollback", version="1.1.0"),),
        ("acme-web", "1.2.0"): (outcome("web-1", "failure"),),
    }
    pred = testing.classify_host(
        "canary-1", [WEB_11], sim("debian12_lab_upgrade_only"), POLICY, history=history
    ).items[0]
    assert pred.risk is RiskLevel.HIGH
    assert any("was rolled back on web-1 in run run-7" in r for r in pred.reasons)
    clean = testing.classify_host(
        "canary-1",
        [WEB_11],
        sim("debian12_lab_upgrade_only"),
        POLICY,
        history={("acme-web", "1.1.0"): (outcome("web-1", "success", version="1.1.0"),)},
    ).items[0]
    assert clean.risk is RiskLevel.LOW


def test_load_history_queries_each_version_once_and_survives_errors(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    class Flaky:
        def outcomes(self, package: str, version: str) -> list[Outcome]:
            calls.append((package, version))
            if package == "broken":
                raise RuntimeError("db gone")
            return [outcome("web-1", "failure")]

    items = [
        WEB_11,
        item("web-1", "acme-web", "1.0.0", "1.1.0"),
        item("web-1", "broken", "1", "2"),
    ]
    found, warnings = testing.load_history(items, Flaky())
    assert sorted(calls) == [("acme-web", "1.1.0"), ("broken", "2")]
    assert list(found) == [("acme-web", "1.1.0")]
    assert warnings == ("outcome history of broken 2 unavailable: db gone",)
    with Store(tmp_path / "s.db") as store:
        store.record_outcome("r1", "web-1", "acme-web", "1.0.0", "1.1.0", "failure", "boom")
        found, warnings = testing.load_history([WEB_11], store)
    assert warnings == ()
    assert [o.host for o in found[("acme-web", "1.1.0")]] == ["web-1"]


# --------------------------------------------------------------------------- test_plan


def _respond(apt: dict[str, tuple[int, str, str]]) -> Callable[[tuple[str, ...]], CommandResult]:
    def respond(argv: tuple[str, ...]) -> CommandResult:
        if argv[0] == "apt-get":
            code, out, err = apt[argv[-1]]
        elif "dpkg-query -L" in argv[2]:
            code, out, err = 0, "@@package acme-web\n/etc/init.d/acme-web\n", ""
        else:
            line = f"acme-web\t /etc/init.d/acme-web {MD5}\n@@md5sum\n{MD5}  /etc/init.d/acme-web\n"
            code, out, err = 0, line, ""
        return CommandResult(host="", argv=argv, exit_code=code, stdout=out, stderr=err)

    return respond


def _apt(case: str) -> tuple[int, str, str]:
    data = _record(case)
    return data["exit_code"], data["stdout"], data["stderr"]


@pytest.fixture
def transports() -> tuple[dict[str, ScriptedTransport], TransportFactory]:
    """A transport factory: canary-1 upgrades, db-1 is held, web-1 has no version 9.9,
    down-1 is unreachable."""
    made: dict[str, ScriptedTransport] = {}
    answers = {
        "canary-1": {"acme-web=1.1.0": _apt("debian12_lab_upgrade_only")},
        "db-1": {"acme-web=1.1.0": _apt("debian12_lab_held")},
        "web-1": {"acme-web=9.9": _apt("debian12_lab_version_not_found")},
    }

    def fake_open(host: Host, settings: Settings) -> Transport:
        if host.name == "down-1":
            raise HostConnectError(host.name, "connection refused")
        made[host.name] = ScriptedTransport(_respond(answers[host.name]), name=host.name)
        return made[host.name]

    return made, fake_open


def _hosts(*names: str) -> list[Host]:
    return [Host(name=n, address="127.0.0.1") for n in names]


def test_test_plan_end_to_end(
    transports: tuple[dict[str, ScriptedTransport], TransportFactory], tmp_path: Path
) -> None:
    made, factory = transports
    plan = PatchPlan.create(
        run_id="r1",
        created_at=NOW,
        items=[
            WEB_11,
            item("db-1", "acme-web", "1.0.0", "1.1.0"),
            item("web-1", "acme-web", "1.0.0", "9.9"),
            item("down-1", "acme-web", "1.0.0", "1.1.0"),
            item("gone-1", "acme-web", "1.0.0", "1.1.0"),
        ],
    )
    hosts = _hosts("canary-1", "db-1", "web-1", "down-1")
    with Store(tmp_path / "s.db") as store:
        report = testing.test_plan(
            plan,
            hosts,
            Settings(home=tmp_path, concurrency=2),
            POLICY,
            history=store,
            transport_factory=factory,
        )
    assert isinstance(report, TestReport)
    assert report.plan_id == plan.plan_id
    assert report.content_hash == plan.content_hash
    assert [h.host for h in report.hosts] == ["canary-1", "db-1", "down-1", "gone-1", "web-1"]

    canary = report.item("canary-1", "acme-web")
    assert canary.status is ItemStatus.READY
    assert canary.risk is RiskLevel.LOW
    assert Classification.UPGRADES_ONLY in canary.classifications
    assert canary.services == ("acme-web",)
    # exactly one simulation of exactly that host's items, then services and conffiles
    calls = made["canary-1"].calls
    assert calls[0] == (
        "apt-get", "-s", "-o", "Debug::NoLocking=1", "-o", "APT::Get::Show-Versions=1",
        "install", "--only-upgrade", "--", "acme-web=1.1.0",
    )  # fmt: skip
    assert len(calls) == 3

    held = report.item("db-1", "acme-web")
    assert held.status is ItemStatus.BLOCKED
    assert held.needs_approval

    failed = report.item("web-1", "acme-web")
    assert failed.status is ItemStatus.FAILED
    assert failed.risk is RiskLevel.HIGH
    assert "E: Version '9.9' for 'acme-web' was not found" in failed.reasons[0]
    assert report.host("web-1").status == "failed"

    assert report.item("down-1", "acme-web").status is ItemStatus.UNREACHABLE
    assert "connection refused" in (report.host("down-1").error or "")
    gone = report.host("gone-1")
    assert gone.status == "unreachable"
    assert "not in the inventory" in (gone.error or "")

    effects = report.predicted_effects()
    assert effects == {
        "canary-1": PredictedEffects(),
        "db-1": PredictedEffects(held=True),
    }
    reasons = approval_required(plan, hosts, POLICY, effects)
    assert "db-1: the change touches held packages (approvals.on_held)" in reasons
    assert [i.key for i in report.blocked] == [("db-1", "acme-web")]
    assert [i.key for i in report.deployable] == [("canary-1", "acme-web")]


def test_downgrade_items_simulate_with_allow_downgrades(tmp_path: Path) -> None:
    seen: list[tuple[str, ...]] = []

    def respond(argv: tuple[str, ...]) -> CommandResult:
        seen.append(argv)
        code, out, err = _apt("debian12_lab_rollback_downgrade")
        if argv[0] != "apt-get":
            code, out, err = 0, "@@package acme-web\n", ""
            if "dpkg-query -L" not in argv[2]:
                out = "@@md5sum\n"
        return CommandResult(host="", argv=argv, exit_code=code, stdout=out, stderr=err)

    plan = PatchPlan.create(
        run_id="r1", created_at=NOW, items=[item("canary-1", "acme-web", "1.1.0", "1.0.0")]
    )
    report = testing.test_plan(
        plan,
        _hosts("canary-1"),
        Settings(home=tmp_path),
        POLICY,
        transport_factory=lambda host, settings: ScriptedTransport(respond, host.name),
    )
    assert "--allow-downgrades" in seen[0]
    assert report.host("canary-1").allow_downgrades
    assert report.item("canary-1", "acme-web").status is ItemStatus.READY


def test_concurrency_is_bounded_and_order_is_stable(tmp_path: Path) -> None:
    lock = threading.Lock()
    active = 0
    peak = 0

    def respond(argv: tuple[str, ...]) -> CommandResult:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        code, out, err = _apt("debian12_lab_version_not_found")
        return CommandResult(host="", argv=argv, exit_code=code, stdout=out, stderr=err)

    names = [f"h{n:02d}" for n in range(8)]
    plan = PatchPlan.create(
        run_id="r1", created_at=NOW, items=[item(n, "acme-web", "1.0.0", "9.9") for n in names]
    )
    report = testing.test_plan(
        plan,
        _hosts(*reversed(names)),
        Settings(home=tmp_path, concurrency=3),
        POLICY,
        transport_factory=lambda host, settings: ScriptedTransport(respond, host.name),
    )
    assert peak <= 3
    assert [h.host for h in report.hosts] == names
    assert {i.status for i in report.items} == {ItemStatus.FAILED}


def test_unexpected_error_is_contained(tmp_path: Path) -> None:
    def boom(host: Host, settings: Settings) -> Transport:
        raise RuntimeError("bug")

    plan = PatchPlan.create(run_id="r1", created_at=NOW, items=[WEB_11])
    report = testing.test_plan(
        plan, _hosts("canary-1"), Settings(home=tmp_path), POLICY, transport_factory=boom
    )
    assert report.host("canary-1").status == "failed"
    assert "unexpected RuntimeError: bug" in (report.host("canary-1").error or "")


def test_empty_plan(tmp_path: Path) -> None:
    plan = PatchPlan.create(run_id="r1", created_at=NOW, items=[])
    report = testing.test_plan(plan, [], Settings(home=tmp_path), POLICY)
    assert report.hosts == ()
    assert report.predicted_effects() == {}
    with pytest.raises(KeyError):
        report.item("x", "y")
