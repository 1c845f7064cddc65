"""Planning: baseline approval, --only pins and source names, rejection, frozen hash,
approvals, compliance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpilot.agents.planning import approval_required, build_plan, is_binnmu_of
from patchpilot.core.models import (
    Ecosystem,
    Finding,
    FixState,
    Host,
    InstalledPackage,
    PendingUpdate,
    Severity,
    UpdateOrigin,
)
from patchpilot.core.plan import (
    ComplianceState,
    ExclusionReason,
    PatchPlan,
    PredictedEffects,
    compliance_state,
)
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.store.records import FindingRecord

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
HOSTS = [
    Host(
        name="canary-1", address="127.0.0.1", tags=frozenset({"canary", "staging"}), criticality=2
    ),
    Host(name="web-1", address="127.0.0.1", tags=frozenset({"web", "prod"}), criticality=4),
]


BASE = load_policy(REPO / "configs" / "policy.yaml")


def _policy(**baseline: object) -> Policy:
    base = BASE
    data = base.model_dump(mode="json", by_alias=True)
    data["baseline"].update(baseline)
    return Policy.model_validate(data)


def _acme(host: str = "web-1") -> PendingUpdate:
    return PendingUpdate(
        name="acme-web",
        installed_version="1.0.0",
        candidate_version="1.2.0",
        security=False,
        origin=UpdateOrigin.LOCAL,
        source_name="acme-web",
    )


def _openssl() -> PendingUpdate:
    return PendingUpdate(
        name="libssl3",
        installed_version="3.0.11-1",
        candidate_version="3.0.15-1",
        security=True,
        origin=UpdateOrigin.SECURITY,
        source_name="openssl",
        cves=("CVE-2024-0001",),
    )


def _point() -> PendingUpdate:
    return PendingUpdate(
        name="tzdata",
        installed_version="2024a-0",
        candidate_version="2025a-0",
        security=False,
        origin=UpdateOrigin.POINT_RELEASE,
        source_name="tzdata",
    )


def _finding(host: str, first_seen: datetime, severity: Severity = Severity.HIGH) -> FindingRecord:
    f = Finding(
        host=host,
        source_package="openssl",
        binary_packages=("libssl3",),
        installed_source_version="3.0.11-1",
        advisory_id="DSA-1",
        cves=("CVE-2024-0002",),
        fix=FixState.fixed("3.0.15-1"),
        severity=severity,
        first_seen=first_seen,
    )
    return FindingRecord(finding=f, risk=None, kev=True)


PENDING = {"web-1": [_acme(), _openssl(), _point()], "canary-1": [_acme(), _point()]}


def test_default_baseline_approves_security_and_local() -> None:
    plan = build_plan("r1", [_finding("web-1", NOW)], PENDING, HOSTS, _policy(), now=NOW)
    assert [(i.host, i.package, i.to_version, i.rule) for i in plan.items] == [
        ("canary-1", "acme-web", "1.2.0", "local-repository"),
        ("web-1", "acme-web", "1.2.0", "local-repository"),
        ("web-1", "libssl3", "3.0.15-1", "security-updates"),
    ]
    ssl = plan.items[2]
    assert ssl.cves == ("CVE-2024-0001", "CVE-2024-0002")
    assert ssl.kev
    assert ssl.severity is Severity.HIGH
    assert {(e.host, e.package, e.exclusion) for e in plan.excluded} == {
        ("canary-1", "tzdata", ExclusionReason.NOT_APPROVED),
        ("web-1", "tzdata", ExclusionReason.NOT_APPROVED),
    }
    PatchPlan.model_validate(plan.model_dump())  # round-trips with its hash


def test_only_pins_an_offered_version_and_refuses_others() -> None:
    available = {"web-1": {"acme-web": ["1.0.0", "1.1.0", "1.2.0"]}}
    plan = build_plan(
        "r1",
        [],
        PENDING,
        HOSTS,
        _policy(),
        now=NOW,
        only=[("acme-web", "1.1.0"), ("nothere", None)],
        available=available,
    )
    assert [(i.host, i.to_version) for i in plan.items] == [("web-1", "1.1.0")]
    assert "pinned by --only to 1.1.0 (candidate 1.2.0)" in plan.items[0].reason
    reasons = {(e.host, e.package): e for e in plan.excluded}
    assert reasons[("canary-1", "acme-web")].exclusion is ExclusionReason.VERSION_NOT_OFFERED
    assert "do not offer it" in reasons[("canary-1", "acme-web")].reason
    assert reasons[("web-1", "libssl3")].exclusion is ExclusionReason.NOT_IN_ONLY
    assert plan.unmatched_only == ("nothere",)
    down = build_plan(
        "r1",
        [],
        PENDING,
        HOSTS,
        _policy(),
        now=NOW,
        only=[("acme-web", "1.0.0")],
        available=available,
    )
    assert not down.items


def test_approve_after_days_counts_from_first_seen() -> None:
    rules = [{"name": "sec-7d", "origin": ["security"], "approve_after_days": 7}]
    fresh = build_plan(
        "r1",
        [_finding("web-1", NOW - timedelta(days=2))],
        PENDING,
        HOSTS,
        _policy(rules=rules),
        now=NOW,
        only=[("libssl3", None)],
    )
    (ex,) = [e for e in fresh.excluded if e.package == "libssl3"]
    assert ex.exclusion is ExclusionReason.NOT_YET_APPROVED
    assert ex.approve_on == NOW + timedelta(days=5)
    assert "2025-06-15" in ex.reason
    old = build_plan(
        "r1",
        [_finding("web-1", NOW - timedelta(days=7))],
        PENDING,
        HOSTS,
        _policy(rules=rules),
        now=NOW,
        only=[("libssl3", None)],
    )
    assert [i.package for i in old.items] == ["libssl3"]


def test_rule_filters_severity_kev_and_non_security() -> None:
    rules = [{"name": "crit", "min_severity": "critical"}, {"name": "kev", "kev": True}]
    plan = build_plan(
        "r1",
        [_finding("web-1", NOW, Severity.MEDIUM)],
        PENDING,
        HOSTS,
        _policy(rules=rules, include_non_security=False),
        now=NOW,
    )
    assert [(i.package, i.rule) for i in plan.items] == [("libssl3", "kev")]
    assert {e.exclusion for e in plan.excluded if e.package == "acme-web"} == {
        ExclusionReason.NON_SECURITY
    }


def test_rejected_and_approved_lists() -> None:
    plan = build_plan(
        "r1",
        [],
        PENDING,
        HOSTS,
        _policy(rejected_packages=["openssl"], approved_packages=["tzdata=2025a-0"]),
        now=NOW,
    )
    by = {(i.host, i.package): i.rule for i in plan.items}
    assert by[("web-1", "tzdata")] == "approved-packages"
    assert ("web-1", "libssl3") not in by  # rejected by its source package
    blocked = build_plan(
        "r1",
        [],
        PENDING,
        HOSTS,
        _policy(rejected_packages=["libfoo*"], rejected_action="block"),
        now=NOW,
        dependencies={"web-1": {"acme-web": ["libfoo1"]}},
    )
    (ex,) = [e for e in blocked.excluded if (e.host, e.package) == ("web-1", "acme-web")]
    assert ex.exclusion is ExclusionReason.BLOCKED_DEPENDENCY


@settings(deadline=None, max_examples=50)
@given(st.permutations(list(range(3))), st.booleans())
def test_hash_stable_under_input_reordering(order: list[int], flip_hosts: bool) -> None:
    pending = {h: [PENDING[h][i] for i in order if i < len(PENDING[h])] for h in PENDING}
    hosts = list(reversed(HOSTS)) if flip_hosts else HOSTS
    a = build_plan("r1", [_finding("web-1", NOW)], PENDING, HOSTS, _policy(), now=NOW)
    b = build_plan("r1", [_finding("web-1", NOW)], pending, hosts, _policy(), now=NOW)
    assert a.content_hash == b.content_hash
    assert a == b


@settings(deadline=None, max_examples=50)
@given(st.sampled_from(["to_version", "rule", "reason", "cves", "kev", "host"]))
def test_any_item_change_changes_hash(field: str) -> None:
    plan = build_plan("r1", [], PENDING, HOSTS, _policy(), now=NOW)
    item = plan.items[0]
    new = {
        "to_version": "9",
        "rule": "x",
        "reason": "y",
        "cves": ("CVE-2020-1",),
        "kev": True,
        "host": "zzz",
    }[field]
    changed = PatchPlan.create(
        run_id="r1", created_at=NOW, items=[item.model_copy(update={field: new}), *plan.items[1:]]
    )
    assert changed.content_hash != plan.content_hash
    with pytest.raises(ValueError, match="content_hash"):
        PatchPlan.model_validate({**plan.model_dump(), "content_hash": changed.content_hash})


def test_approval_required_reasons() -> None:
    plan = build_plan("r1", [], PENDING, HOSTS, _policy(), now=NOW)
    reasons = approval_required(
        plan, HOSTS, _policy(), {"canary-1": PredictedEffects(removals=True, reboot=True)}
    )
    assert reasons == [
        "canary-1: the simulation predicts package removals (approvals.on_removals)",
        "web-1 is tagged prod (approvals.tags)",
    ]
    canary_only = build_plan("r1", [], {"canary-1": [_acme()]}, HOSTS, _policy(), now=NOW)
    assert approval_required(canary_only, HOSTS, _policy()) == []
    empty = build_plan("r1", [], {}, HOSTS, _policy(), now=NOW)
    assert approval_required(empty, HOSTS, _policy()) == []


@pytest.mark.parametrize(
    ("args", "kwargs", "state"),
    [
        (("1.1.0", "1.1.0"), {}, ComplianceState.INSTALLED),
        (("1.2.0", "1.1.0"), {}, ComplianceState.INSTALLED),
        (("1.0.0", "1.1.0"), {}, ComplianceState.MISSING),
        (("1.0.0", "1.1.0"), {"failed": True}, ComplianceState.FAILED),
        (("1.1.0", "1.1.0"), {"reboot_pending": True}, ComplianceState.INSTALLED_PENDING_REBOOT),
        ((None, "1.1.0"), {}, ComplianceState.NOT_APPLICABLE),
        (("1.0.0", None), {}, ComplianceState.INSTALLED_OTHER),
        (("1.0.0", None), {"rejected": True}, ComplianceState.INSTALLED_OTHER),
        (("1.0.0", None), {"rejected": True, "blocked": True}, ComplianceState.INSTALLED_REJECTED),
    ],
)
def test_compliance_states(
    args: tuple[str | None, str | None], kwargs: dict[str, bool], state: ComplianceState
) -> None:
    assert compliance_state(*args, **kwargs) is state
    assert state.compliant == (
        state
        in {
            ComplianceState.INSTALLED,
            ComplianceState.INSTALLED_OTHER,
            ComplianceState.NOT_APPLICABLE,
        }
    )


def test_rollback_plan_downgrades_only_where_an_older_offered_version_exists() -> None:
    from datetime import UTC, datetime

    from patchpilot.agents.planning import ROLLBACK_RULE, build_rollback_plan

    plan = build_rollback_plan(
        "run-rb",
        "acme-web",
        {"a": "1.0.0", "b": "1.0.0", "c": "1.0.0", "d": "1.2.0"},
        {"a": "1.1.0", "b": None, "c": "1.1.0", "d": "1.1.0"},
        {"a": {"acme-web": ["1.0.0", "1.1.0"]}, "c": {"acme-web": ["1.1.0"]},
         "d": {"acme-web": ["1.1.0", "1.2.0"]}},
        now=datetime(2026, 11, 27, tzinfo=UTC),
        reason="asked in chat",
    )  # fmt: skip
    assert [(i.host, i.from_version, i.to_version, i.rule) for i in plan.items] == [
        ("a", "1.1.0", "1.0.0", ROLLBACK_RULE)
    ]
    assert {e.host: e.exclusion.value for e in plan.excluded} == {
        "b": "not-installed",
        "c": "version-not-offered",
        "d": "not-a-rollback",
    }


# --------------------------------------------------------------------------- --only by source name


def _zlib(name: str = "zlib1g", candidate: str = "1:1.2.13.dfsg-1+deb12u1") -> PendingUpdate:
    return PendingUpdate(
        name=name,
        installed_version="1:1.2.13.dfsg-1",
        candidate_version=candidate,
        security=True,
        origin=UpdateOrigin.SECURITY,
        source_name="zlib",
    )


def _installed(name: str, version: str, source: str) -> InstalledPackage:
    return InstalledPackage(
        name=name,
        version=version,
        source_name=source,
        source_version=version,
        ecosystem=Ecosystem.DEBIAN,
    )


ZLIB_PENDING = {"web-1": [_acme(), _zlib(), _zlib("zlib1g-dev")], "canary-1": [_acme()]}


def test_only_a_source_name_plans_every_binary_of_that_source_per_host() -> None:
    plan = build_plan("r1", [], ZLIB_PENDING, HOSTS, _policy(), now=NOW, only=[("zlib", None)])
    assert [(i.host, i.package, i.source_package) for i in plan.items] == [
        ("web-1", "zlib1g", "zlib"),
        ("web-1", "zlib1g-dev", "zlib"),
    ]
    assert all("--only zlib names its source package" in i.reason for i in plan.items)
    assert plan.unmatched_only == ()
    excluded = {(e.host, e.package): e.exclusion for e in plan.excluded}
    assert excluded == {
        ("canary-1", "acme-web"): ExclusionReason.NOT_IN_ONLY,
        ("web-1", "acme-web"): ExclusionReason.NOT_IN_ONLY,
    }


def test_only_a_binary_name_still_plans_that_binary_only() -> None:
    plan = build_plan("r1", [], ZLIB_PENDING, HOSTS, _policy(), now=NOW, only=[("zlib1g", None)])
    assert [(i.host, i.package) for i in plan.items] == [("web-1", "zlib1g")]


def test_the_source_comes_from_the_installed_package_when_the_update_has_none() -> None:
    pending = {"web-1": [_zlib().model_copy(update={"source_name": None})]}
    installed = {"web-1": [_installed("zlib1g", "1:1.2.13.dfsg-1", "zlib")]}
    plan = build_plan(
        "r1", [], pending, HOSTS, _policy(), now=NOW, only=[("zlib", None)], installed=installed
    )
    assert [(i.host, i.package) for i in plan.items] == [("web-1", "zlib1g")]
    assert plan.unmatched_only == ()


def test_a_source_version_selects_the_binaries_built_from_it_binnmus_included() -> None:
    pending = {
        "web-1": [
            _zlib(candidate="1:1.2.13.dfsg-1+deb12u1+b1"),  # a binNMU of the source version
            _zlib("zlib-other", candidate="2.0-1"),  # versioned apart from its source
        ]
    }
    plan = build_plan(
        "r1",
        [],
        pending,
        HOSTS,
        _policy(),
        now=NOW,
        only=[("zlib", "1:1.2.13.dfsg-1+deb12u1")],
    )
    assert [(i.package, i.to_version) for i in plan.items] == [
        ("zlib1g", "1:1.2.13.dfsg-1+deb12u1+b1")
    ]
    (other,) = plan.excluded
    assert other.package == "zlib-other"
    assert other.exclusion is ExclusionReason.VERSION_NOT_OFFERED
    assert "no version of zlib-other built from it is offered on web-1" in other.reason
    # an older source version the repositories still offer is pinned per binary
    offered = {"web-1": {"zlib1g": ["1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u0+b2", "x"]}}
    older = build_plan(
        "r1",
        [],
        {"web-1": [_zlib()]},
        HOSTS,
        _policy(),
        now=NOW,
        only=[("zlib", "1:1.2.13.dfsg-1+deb12u0")],
        available=offered,
    )
    assert [(i.package, i.to_version) for i in older.items] == [
        ("zlib1g", "1:1.2.13.dfsg-1+deb12u0+b2")
    ]
    assert "pinned by --only" in older.items[0].reason


def test_is_binnmu_of() -> None:
    assert is_binnmu_of("1.2-1+b3", "1.2-1")
    assert is_binnmu_of("1.2-1", "1.2-1")
    assert not is_binnmu_of("1.2-10", "1.2-1")
    assert not is_binnmu_of("1.2-1+bx", "1.2-1")
    assert not is_binnmu_of("1.2-1+deb12u1", "1.2-1")


def test_a_name_that_matches_nothing_gets_a_question_or_a_plain_answer() -> None:
    installed = {
        "web-1": [_installed("zlib1g", "1:1.2.13.dfsg-1", "zlib")],
        "canary-1": [_installed("bash", "5.2.15-2", "bash")],
    }
    plan = build_plan(
        "r1",
        [],
        {"web-1": [_openssl()], "canary-1": []},
        HOSTS,
        _policy(),
        now=NOW,
        only=[("openssl3", None), ("libssl", None), ("bash", None), ("nothere", None)],
        installed=installed,
    )
    assert plan.items == ()
    assert plan.unmatched_only == ("bash", "libssl", "nothere", "openssl3")
    assert plan.suggestions["openssl3"] == (
        "no pending update matches openssl3: openssl is the source of libssl3: patch libssl3?"
    )
    assert plan.suggestions["libssl"] == ("no pending update matches libssl: did you mean libssl3?")
    assert plan.suggestions["bash"] == (
        "bash has no pending update: installed and up to date on canary-1 (bash 5.2.15-2)"
    )
    assert plan.suggestions["nothere"] == "no pending update matches nothere on canary-1, web-1"
    assert plan.up_to_date == ("bash",)
    # the suggestions survive the plan's JSON (checkpoints) and never change its hash
    again = PatchPlan.model_validate(plan.model_dump(mode="json"))
    assert again.suggestions == plan.suggestions
    assert again.content_hash == plan.content_hash


def test_a_held_binary_named_by_its_source_is_excluded_held() -> None:
    pending = {"web-1": [_zlib().model_copy(update={"held": True})]}
    plan = build_plan("r1", [], pending, HOSTS, _policy(), now=NOW, only=[("zlib", None)])
    assert plan.items == ()
    (held,) = plan.excluded
    assert held.exclusion is ExclusionReason.HELD
    assert plan.unmatched_only == ()
