"""Planning: apply the policy baseline to pending updates and freeze a patch plan.

Pure and deterministic: the same inputs (in any order) and the same ``now`` give the same plan
and the same content hash. Baseline semantics follow SSM (research note b3): approval rules with
a delay counted from *first seen* (package managers publish no release dates), an approved
list, and a rejected list with ``allow-as-dependency`` or ``block``. The plan never invents
versions: a target is the candidate of the host's package manager or, with
``--only PKG=VERSION``, a version the host's repositories offer (``available``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import structlog

from patchpilot.core.errors import ConfigError
from patchpilot.core.models import (
    Ecosystem,
    Host,
    PendingUpdate,
    Severity,
    SSVCOutcome,
    UpdateOrigin,
)
from patchpilot.core.plan import (
    ExcludedItem,
    ExclusionReason,
    PatchPlan,
    PlanItem,
    PredictedEffects,
)
from patchpilot.core.policy import ApprovalRule, Baseline, Policy, RejectedAction
from patchpilot.core.store.records import FindingRecord
from patchpilot.core.versions import compare

__all__ = [
    "APPROVED_PACKAGES_RULE",
    "ROLLBACK_RULE",
    "approval_required",
    "build_plan",
    "build_rollback_plan",
]

log = structlog.get_logger(__name__)

#: The ``rule`` of items approved by ``baseline.approved_packages``.
APPROVED_PACKAGES_RULE = "approved-packages"
#: The ``rule`` of rollback items (a person asked for them; the run still needs an approval).
ROLLBACK_RULE = "rollback"

_SSVC_RANK = {
    SSVCOutcome.TRACK: 0,
    SSVCOutcome.TRACK_STAR: 1,
    SSVCOutcome.ATTEND: 2,
    SSVCOutcome.ACT: 3,
}


@dataclass(frozen=True)
class _Context:
    """What the findings say about one pending update."""

    severity: Severity | None
    ssvc: SSVCOutcome | None
    kev: bool
    cves: tuple[str, ...]
    first_seen: datetime | None
    has_findings: bool


def _context(update: PendingUpdate, related: Sequence[FindingRecord]) -> _Context:
    severities = [r.finding.severity for r in related]
    ssvcs = [r.risk.ssvc for r in related if r.risk is not None]
    cves = {*update.cves, *(c for r in related for c in r.finding.cves)}
    return _Context(
        severity=max(severities, key=lambda s: s.rank) if severities else None,
        ssvc=max(ssvcs, key=_SSVC_RANK.__getitem__) if ssvcs else None,
        kev=any(r.kev for r in related),
        cves=tuple(sorted(cves)),
        first_seen=min((r.finding.first_seen for r in related), default=None),
        has_findings=bool(related),
    )


def _related(
    host: str, update: PendingUpdate, findings: Sequence[FindingRecord]
) -> list[FindingRecord]:
    return [
        r
        for r in findings
        if r.finding.host == host
        and (
            (update.source_name is not None and r.finding.source_package == update.source_name)
            or update.name in r.finding.binary_packages
        )
    ]


def _rule_matches(rule: ApprovalRule, update: PendingUpdate, ctx: _Context) -> bool:
    if rule.min_severity is not None:
        if ctx.severity is None:
            return False
        if rule.min_severity is not Severity.UNKNOWN and (
            ctx.severity is Severity.UNKNOWN or ctx.severity.rank < rule.min_severity.rank
        ):
            return False
    if rule.ssvc and ctx.ssvc not in rule.ssvc:
        return False
    if rule.kev is not None and ctx.kev != rule.kev:
        return False
    if rule.origin and update.origin not in rule.origin:
        return False
    names = [update.name] + ([update.source_name] if update.source_name else [])
    return not rule.packages or any(fnmatchcase(n, p) for n in names for p in rule.packages)


def _approve_time(rule: ApprovalRule, first_seen: datetime) -> datetime | None:
    """When the rule approves an update first seen at ``first_seen`` (None: never)."""
    if rule.approve_until_date is not None:
        if first_seen.astimezone(UTC).date() <= rule.approve_until_date:
            return first_seen
        return None
    return first_seen + timedelta(days=rule.delay_days)


def _is_rejected(baseline: Baseline, name: str, source: str | None, version: str) -> bool:
    return baseline.is_rejected(name, version) or (
        source is not None and baseline.is_rejected(source, version)
    )


def _ecosystem_of(host: str, ecosystems: Mapping[str, Ecosystem | None] | None) -> Ecosystem:
    """The host's package ecosystem; debian when unknown (plans before the field existed)."""
    return (ecosystems or {}).get(host) or Ecosystem.DEBIAN


def _parse_only(only: Sequence[tuple[str, str | None]]) -> dict[str, str | None]:
    wanted: dict[str, str | None] = {}
    for name, version in only:
        if name in wanted and wanted[name] != version:
            raise ConfigError(
                f"{name} is given twice with different versions ({wanted[name]}, {version})",
                key="--only",
            )
        wanted[name] = version
    return wanted


def _item_fields(
    host: str, update: PendingUpdate, version: str, cves: tuple[str, ...]
) -> dict[str, Any]:
    """The fields a plan item and an excluded item share."""
    return {
        "host": host,
        "package": update.name,
        "arch": update.arch,
        "from_version": update.installed_version,
        "to_version": version,
        "source_package": update.source_name,
        "origin": update.origin,
        "security": update.security,
        "cves": cves,
    }


def _excluded(
    host: str,
    update: PendingUpdate,
    ctx: _Context,
    why: ExclusionReason,
    text: str,
    version: str,
    approve_on: datetime | None = None,
) -> ExcludedItem:
    return ExcludedItem(
        **_item_fields(host, update, version, ctx.cves),
        exclusion=why,
        reason=text,
        approve_on=approve_on,
    )


def _decide(
    host: str,
    update: PendingUpdate,
    ctx: _Context,
    baseline: Baseline,
    wanted: Mapping[str, str | None],
    now: datetime,
    available: Mapping[str, Mapping[str, Sequence[str]]] | None,
    first_seen: Mapping[tuple[str, str, str], datetime] | None,
    dependencies: Mapping[str, Mapping[str, Sequence[str]]] | None,
    ecosystem: Ecosystem = Ecosystem.DEBIAN,
) -> PlanItem | ExcludedItem:
    """The plan item for one pending update, or why it is excluded (versions of the host's
    ``ecosystem``)."""
    target = update.candidate_version
    pinned = False
    if update.held and (not wanted or update.name in wanted):
        return _excluded(
            host,
            update,
            ctx,
            ExclusionReason.HELD,
            f"{update.name} is held on {host} (apt-mark hold): apt never upgrades it; unhold "
            "it first if it should be patched",
            wanted.get(update.name) or target if wanted else target,
        )
    if wanted:
        if update.name not in wanted:
            return _excluded(
                host, update, ctx, ExclusionReason.NOT_IN_ONLY, "not named by --only", target
            )
        version = wanted[update.name]
        if version is not None and version != target:
            offered = list((available or {}).get(host, {}).get(update.name, ()))
            if version not in offered:
                shown = ", ".join(sorted(set(offered) | {target}))
                return _excluded(
                    host,
                    update,
                    ctx,
                    ExclusionReason.VERSION_NOT_OFFERED,
                    f"--only {update.name}={version}: {host}'s repositories do not "
                    f"offer it (offered: {shown})",
                    version,
                )
            if update.installed_version is not None and (
                compare(ecosystem, version, update.installed_version) <= 0
            ):
                return _excluded(
                    host,
                    update,
                    ctx,
                    ExclusionReason.VERSION_NOT_OFFERED,
                    f"--only {update.name}={version} is not an upgrade of the installed "
                    f"{update.installed_version}",
                    version,
                )
            target, pinned = version, True

    if _is_rejected(baseline, update.name, update.source_name, target):
        return _excluded(
            host,
            update,
            ctx,
            ExclusionReason.REJECTED,
            f"{update.name}={target} is on the baseline's rejected list "
            f"({baseline.rejected_action.value})",
            target,
        )
    if baseline.rejected_action is RejectedAction.BLOCK and dependencies is not None:
        needs = sorted(
            d
            for d in dependencies.get(host, {}).get(update.name, ())
            if d != update.name and baseline.is_rejected(d)
        )
        if needs:
            return _excluded(
                host,
                update,
                ctx,
                ExclusionReason.BLOCKED_DEPENDENCY,
                f"blocked: its install needs rejected package(s) {', '.join(needs)}",
                target,
            )

    rule_name: str
    reason: str
    if baseline.is_explicitly_approved(update.name, target):
        rule_name = APPROVED_PACKAGES_RULE
        reason = f"{update.name}={target} is on the baseline's approved list"
    else:
        is_security = (
            update.security
            or update.origin is UpdateOrigin.SECURITY
            or bool(ctx.cves)
            or ctx.has_findings
        )
        if not is_security and not baseline.include_non_security:
            return _excluded(
                host,
                update,
                ctx,
                ExclusionReason.NON_SECURITY,
                "not a security update and baseline.include_non_security is false",
                target,
            )
        seen = (first_seen or {}).get((host, update.name, target)) or ctx.first_seen or now
        matching = [r for r in baseline.rules if _rule_matches(r, update, ctx)]
        if not matching:
            return _excluded(
                host,
                update,
                ctx,
                ExclusionReason.NOT_APPROVED,
                "no baseline rule approves it",
                target,
            )
        timed = [(r, _approve_time(r, seen)) for r in matching]
        approved = next((r for r, at in timed if at is not None and at <= now), None)
        if approved is None:
            waiting = sorted(((at, r.name, r) for r, at in timed if at is not None))
            when = waiting[0][0] if waiting else None
            detail = (
                f"rule {waiting[0][2].name!r}: approve after {waiting[0][2].delay_days} days: "
                f"{waiting[0][0].astimezone(UTC).date().isoformat()}"
                if waiting
                else f"rule {matching[0].name!r}: first seen after approve_until_date"
            )
            return _excluded(
                host,
                update,
                ctx,
                ExclusionReason.NOT_YET_APPROVED,
                f"not yet approved ({detail}; first seen "
                f"{seen.astimezone(UTC).date().isoformat()})",
                target,
                approve_on=when,
            )
        rule_name = approved.name
        reason = f"approved by baseline rule {approved.name!r}"
    if pinned:
        reason += f"; pinned by --only to {target} (candidate {update.candidate_version})"
    return PlanItem(
        **_item_fields(host, update, target, () if pinned else ctx.cves),
        ecosystem=ecosystem,
        severity=ctx.severity,
        ssvc=ctx.ssvc,
        kev=ctx.kev,
        rule=rule_name,
        reason=reason,
    )


def build_plan(
    run_id: str,
    findings: Sequence[FindingRecord],
    pending_by_host: Mapping[str, Sequence[PendingUpdate]],
    hosts: Sequence[Host],
    policy: Policy,
    *,
    only: Sequence[tuple[str, str | None]] = (),
    now: datetime,
    available: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    first_seen: Mapping[tuple[str, str, str], datetime] | None = None,
    dependencies: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    ecosystems: Mapping[str, Ecosystem | None] | None = None,
) -> PatchPlan:
    """Apply the baseline to every pending update of ``hosts`` and freeze the plan.

    Args:
        run_id: The run this plan belongs to (part of ``plan_id``).
        findings: Prioritized findings (joined to updates by host and source/binary package).
        pending_by_host: Host name -> updates its package manager offers.
        hosts: The targets; pending updates of other hosts are ignored.
        policy: The policy (its ``baseline``).
        only: ``--only`` specs ``(package, version or None)``; when given, nothing else is planned.
            A version must be the host's candidate or in ``available`` for that host.
        now: The evaluation time (timezone-aware); approval delays are compared to it.
        available: Host -> package -> versions its repositories offer (to pin a non-candidate).
        first_seen: ``(host, package, version)`` -> when that update was first seen; else the
            earliest first seen of its findings; else ``now`` (a delay then starts today).
        dependencies: Host -> package -> packages its install pulls in (from the simulation);
            used with ``rejected_action: block``.
        ecosystems: Host -> its package ecosystem (``HostFacts.ecosystem``): the items'
            ``ecosystem`` and version ordering; a host missing here (or ``None``) is debian.

    Returns:
        The plan; ``excluded`` says why every other pending update was left out.

    Example::

        plan = build_plan("run-1", findings, {"web-1": pending}, [web1], policy,
                          only=[("acme-web", "1.1.0")], now=now,
                          available={"web-1": {"acme-web": ["1.0.0", "1.1.0", "1.2.0"]}})
        [(i.host, i.package, i.to_version, i.rule) for i in plan.items]
        # [('web-1', 'acme-web', '1.1.0', 'local-repository')]
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    baseline = policy.baseline
    wanted = _parse_only(only)
    matched_only: set[str] = set()
    host_names = {h.name for h in hosts}
    ignored = sorted(set(pending_by_host) - host_names)
    if ignored:
        log.info("plan.outside_targets_ignored", hosts=ignored)

    items: list[PlanItem] = []
    excluded: list[ExcludedItem] = []
    for host in sorted(host_names):
        updates = sorted(pending_by_host.get(host, ()), key=lambda u: (u.name, u.arch))
        for update in updates:
            ctx = _context(update, _related(host, update, findings))
            if wanted and update.name in wanted:
                matched_only.add(update.name)
            outcome = _decide(
                host,
                update,
                ctx,
                baseline,
                wanted,
                now,
                available,
                first_seen,
                dependencies,
                _ecosystem_of(host, ecosystems),
            )
            if isinstance(outcome, PlanItem):
                items.append(outcome)
            else:
                excluded.append(outcome)
    unmatched = sorted(
        f"{name}={version}" if version else name
        for name, version in wanted.items()
        if name not in matched_only
    )
    if unmatched:
        log.warning("plan.only_unmatched", only=unmatched)
    plan = PatchPlan.create(
        run_id=run_id, created_at=now, items=items, excluded=excluded, unmatched_only=unmatched
    )
    log.info(
        "plan.built",
        plan_id=plan.plan_id,
        items=len(plan.items),
        excluded=len(plan.excluded),
        content_hash=plan.content_hash,
    )
    return plan


def approval_required(
    plan: PatchPlan,
    hosts: Sequence[Host],
    policy: Policy,
    predictions: Mapping[str, PredictedEffects] | None = None,
) -> list[str]:
    """Why a person must approve ``plan`` before deployment (empty: no approval needed).

    Only hosts with items count; an empty plan never needs approval.

    Example::

        approval_required(plan, hosts, policy, {"db-1": PredictedEffects(removals=True)})
        # ['web-1 is tagged prod (approvals.tags)', 'db-1 is tagged prod (approvals.tags)',
        #  'db-1: the simulation predicts package removals (approvals.on_removals)']
    """
    rules = policy.approvals
    if not plan.items:
        return []
    reasons: list[str] = []
    if rules.always:
        reasons.append("policy requires approval for every plan (approvals.always)")
    by_name = {h.name: h for h in hosts}
    predictions = predictions or {}
    for name in plan.hosts:
        host = by_name.get(name)
        if host is not None:
            tagged = sorted(host.tags & set(rules.tags))
            if tagged:
                reasons.append(f"{name} is tagged {', '.join(tagged)} (approvals.tags)")
            if rules.min_criticality is not None and host.criticality >= rules.min_criticality:
                reasons.append(
                    f"{name} has criticality {host.criticality} >= {rules.min_criticality} "
                    "(approvals.min_criticality)"
                )
        else:
            reasons.append(f"{name} is not in the inventory given to the approval check")
        effects = predictions.get(name)
        if effects is None:
            continue
        if rules.on_removals and effects.removals:
            reasons.append(
                f"{name}: the simulation predicts package removals (approvals.on_removals)"
            )
        if rules.on_held and effects.held:
            reasons.append(f"{name}: the change touches held packages (approvals.on_held)")
        if rules.on_reboot and effects.reboot:
            reasons.append(
                f"{name}: the change is predicted to need a reboot (approvals.on_reboot)"
            )
    return reasons


def build_rollback_plan(
    run_id: str,
    package: str,
    targets: Mapping[str, str],
    installed: Mapping[str, str | None],
    available: Mapping[str, Mapping[str, Sequence[str]]],
    *,
    now: datetime,
    reason: str,
    ecosystems: Mapping[str, Ecosystem | None] | None = None,
) -> PatchPlan:
    """Freeze a plan that downgrades ``package`` to an earlier version per host.

    Args:
        run_id: The run.
        package: The binary package.
        targets: Host -> the version to go back to.
        installed: Host -> the installed version (None: not installed).
        available: Host -> package -> versions its repositories offer.
        now: The plan's time.
        reason: Why (who asked), kept on every item.
        ecosystems: Host -> its package ecosystem (see :func:`build_plan`).

    Returns:
        One item per host whose target is offered and older than what is installed; the
        others are ``excluded`` with the reason.
    """
    items: list[PlanItem] = []
    excluded: list[ExcludedItem] = []
    for host in sorted(targets):
        version = targets[host]
        current = installed.get(host)
        ecosystem = _ecosystem_of(host, ecosystems)
        base = {"host": host, "package": package, "from_version": current, "to_version": version}
        offered = list(available.get(host, {}).get(package, ()))
        if current is None:
            excluded.append(
                ExcludedItem(
                    **base,
                    exclusion=ExclusionReason.NOT_INSTALLED,
                    reason=f"{package} is not installed on {host}",
                )
            )
        elif version not in offered:
            excluded.append(
                ExcludedItem(
                    **base,
                    exclusion=ExclusionReason.VERSION_NOT_OFFERED,
                    reason=f"{host}'s repositories do not offer {package} {version} "
                    f"(offered: {', '.join(offered) or 'none'})",
                )
            )
        elif compare(ecosystem, version, current) >= 0:
            excluded.append(
                ExcludedItem(
                    **base,
                    exclusion=ExclusionReason.NOT_A_ROLLBACK,
                    reason=f"{version} is not older than the installed {current}",
                )
            )
        else:
            items.append(PlanItem(**base, ecosystem=ecosystem, rule=ROLLBACK_RULE, reason=reason))
    plan = PatchPlan.create(run_id=run_id, created_at=now, items=items, excluded=excluded)
    log.info("plan.rollback.built", plan_id=plan.plan_id, items=len(items), excluded=len(excluded))
    return plan
