"""Planning: apply the policy baseline to pending updates and freeze a patch plan.

Pure and deterministic: the same inputs (in any order) and the same ``now`` give the same plan
and the same content hash. Baseline semantics follow SSM (research note b3): approval rules with
a delay counted from *first seen* (package managers publish no release dates), an approved
list, and a rejected list with ``allow-as-dependency`` or ``block``. The plan never invents
versions. A target is the candidate of the host's package manager or, with
``--only PKG=VERSION``, a version the host's repositories offer (``available``).

``--only NAME`` names packages as people and advisories do: a binary package (``zlib1g``) or a
source package (``zlib``, as advisories name it), matched per host against each pending update's
binary name and its source (:attr:`PendingUpdate.source_name`, else the installed package's
source). A source name selects every binary of that source with a pending update; the plan items
stay per binary. A binary named explicitly wins over its source named in the same ``--only``.
``--only SOURCE=VERSION`` selects the binaries built from that source version: a binary's
candidate (or a version its repositories offer) equal to VERSION or to its binNMU
``VERSION+bN`` (:func:`is_binnmu_of`); a binary of that source at another version (a binary
versioned apart from its source) is excluded ``version-not-offered`` with the versions it has.
A name that matches nothing is listed in ``unmatched_only`` with a sentence in ``suggestions``:
up to date where installed, a question naming a close binary or source ("zlib is the source of
zlib1g: patch zlib1g?"), or "no pending update matches NAME".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from difflib import get_close_matches
from fnmatch import fnmatchcase
from typing import Any

import structlog

from patchpilot.core.errors import ConfigError
from patchpilot.core.models import (
    Ecosystem,
    Host,
    InstalledPackage,
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
    "is_binnmu_of",
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


_BINNMU_RE = re.compile(r"\+b[0-9]+")


def is_binnmu_of(binary_version: str, source_version: str) -> bool:
    """Whether ``binary_version`` is ``source_version`` or a binNMU of it (``VERSION+bN``).

    >>> is_binnmu_of("1:1.2.13.dfsg-1+b1", "1:1.2.13.dfsg-1")
    True
    >>> is_binnmu_of("1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1")
    True
    >>> is_binnmu_of("1:1.2.13.dfsg-10", "1:1.2.13.dfsg-1")
    False
    """
    if binary_version == source_version:
        return True
    rest = binary_version.removeprefix(source_version)
    return rest != binary_version and _BINNMU_RE.fullmatch(rest) is not None


@dataclass(frozen=True)
class _Named:
    """How ``--only`` names one pending update: the spec's name (binary or source) and version."""

    key: str
    version: str | None
    by_source: bool


def _named(
    update: PendingUpdate, source: str | None, wanted: Mapping[str, str | None]
) -> _Named | None:
    """The ``--only`` spec naming ``update`` (its binary name first, then its source)."""
    if update.name in wanted:
        return _Named(update.name, wanted[update.name], by_source=False)
    if source is not None and source in wanted:
        return _Named(source, wanted[source], by_source=True)
    return None


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
    named: _Named | None = None,
) -> PlanItem | ExcludedItem:
    """The plan item for one pending update, or why it is excluded (versions of the host's
    ``ecosystem``; ``named``: the ``--only`` spec that names it, if any)."""
    target = update.candidate_version
    pinned = False
    if update.held and (not wanted or named is not None):
        return _excluded(
            host,
            update,
            ctx,
            ExclusionReason.HELD,
            f"{update.name} is held on {host} (apt-mark hold): apt never upgrades it; unhold "
            "it first if it should be patched",
            (named.version if named is not None else None) or target,
        )
    if wanted:
        if named is None:
            return _excluded(
                host, update, ctx, ExclusionReason.NOT_IN_ONLY, "not named by --only", target
            )
        version = named.version
        spec = f"--only {named.key}={version}"
        offered = list((available or {}).get(host, {}).get(update.name, ()))
        if version is not None and named.by_source:
            # A source version selects the binary built from it: VERSION or its binNMU.
            built = [v for v in (target, *offered) if is_binnmu_of(v, version)]
            if not built:
                shown = ", ".join(sorted(set(offered) | {target}))
                return _excluded(
                    host,
                    update,
                    ctx,
                    ExclusionReason.VERSION_NOT_OFFERED,
                    f"{spec} (source of {update.name}): no version of {update.name} built "
                    f"from it is offered on {host} (offered: {shown})",
                    version,
                )
            version = built[0]
        if version is not None and version != target:
            if version not in offered:
                shown = ", ".join(sorted(set(offered) | {target}))
                return _excluded(
                    host,
                    update,
                    ctx,
                    ExclusionReason.VERSION_NOT_OFFERED,
                    f"{spec}: {host}'s repositories do not offer it (offered: {shown})",
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
                    f"{spec} is not an upgrade of the installed {update.installed_version}",
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
    if named is not None and named.by_source:
        reason += f"; --only {named.key} names its source package"
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
    installed: Mapping[str, Sequence[InstalledPackage]] | None = None,
) -> PatchPlan:
    """Apply the baseline to every pending update of ``hosts`` and freeze the plan.

    Args:
        run_id: The run this plan belongs to (part of ``plan_id``).
        findings: Prioritized findings (joined to updates by host and source/binary package).
        pending_by_host: Host name -> updates its package manager offers.
        hosts: The targets; pending updates of other hosts are ignored.
        policy: The policy (its ``baseline``).
        only: ``--only`` specs ``(package, version or None)``; when given, nothing else is planned.
            A package is a binary or a source name (see the module docstring); a version must be
            the host's candidate or in ``available`` for that host (for a source name: the
            binaries built from that source version).
        now: The evaluation time (timezone-aware); approval delays are compared to it.
        available: Host -> package -> versions its repositories offer (to pin a non-candidate).
        first_seen: ``(host, package, version)`` -> when that update was first seen; else the
            earliest first seen of its findings; else ``now`` (a delay then starts today).
        dependencies: Host -> package -> packages its install pulls in (from the simulation);
            used with ``rejected_action: block``.
        ecosystems: Host -> its package ecosystem (``HostFacts.ecosystem``): the items'
            ``ecosystem`` and version ordering; a host missing here (or ``None``) is debian.
        installed: Host -> its installed packages: the source of a pending update that does not
            name one, and, for a ``--only`` name that matches no pending update, whether it is
            installed (up to date) or unknown (``suggestions``).

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
        sources = {p.name: p.source_name for p in (installed or {}).get(host, ())}
        for update in updates:
            ctx = _context(update, _related(host, update, findings))
            named = _named(update, update.source_name or sources.get(update.name), wanted)
            if named is not None:
                matched_only.add(named.key)
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
                named,
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
    suggestions: dict[str, str] = {}
    up_to_date: list[str] = []
    for spec in unmatched:
        name = spec.partition("=")[0]
        text, is_installed = _suggestion(name, sorted(host_names), pending_by_host, installed or {})
        suggestions[spec] = text
        if is_installed:
            up_to_date.append(spec)
    if unmatched:
        log.warning("plan.only_unmatched", only=unmatched, suggestions=suggestions)
    plan = PatchPlan.create(
        run_id=run_id,
        created_at=now,
        items=items,
        excluded=excluded,
        unmatched_only=unmatched,
        suggestions=suggestions,
        up_to_date=up_to_date,
    )
    log.info(
        "plan.built",
        plan_id=plan.plan_id,
        items=len(plan.items),
        excluded=len(plan.excluded),
        content_hash=plan.content_hash,
    )
    return plan


def _suggestion(
    name: str,
    hosts: Sequence[str],
    pending_by_host: Mapping[str, Sequence[PendingUpdate]],
    installed: Mapping[str, Sequence[InstalledPackage]],
) -> tuple[str, bool]:
    """What to tell about a ``--only`` name that matched no pending update, and whether it is
    installed on a target (then it is up to date: nothing to patch, not a mistake)."""
    found: dict[str, str] = {}  # host -> "zlib1g 1:1.2.13" (binary and installed version)
    for host in hosts:
        for package in installed.get(host, ()):
            if name in (package.name, package.source_name) and host not in found:
                found[host] = f"{package.name} {package.version}"
    if found:
        where = ", ".join(f"{h} ({v})" for h, v in found.items())
        return f"{name} has no pending update: installed and up to date on {where}", True
    binaries: dict[str, set[str]] = {}  # a pending binary or source name -> its binaries
    for host in hosts:
        sources = {p.name: p.source_name for p in installed.get(host, ())}
        for update in pending_by_host.get(host, ()):
            binaries.setdefault(update.name, set()).add(update.name)
            source = update.source_name or sources.get(update.name)
            if source is not None:
                binaries.setdefault(source, set()).add(update.name)
    names = sorted(binaries)
    # A name typed short ("zlib" for zlib1g) or mistyped; a pending name that is only a prefix
    # of what was typed ("patch" for "patchpilot-tools") is not a suggestion.
    close = [n for n in names if n.startswith(name)]
    close += [n for n in get_close_matches(name, names, n=3, cutoff=0.75) if n not in close]
    if not close:
        return f"no pending update matches {name} on {', '.join(hosts) or 'no host'}", False
    best = close[0]
    targets = sorted(binaries[best])
    shown = ", ".join(targets)
    if targets == [best]:
        return f"no pending update matches {name}: did you mean {best}?", False
    return f"no pending update matches {name}: {best} is the source of {shown}: patch {shown}?", (
        False
    )


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
