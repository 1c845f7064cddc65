"""The frozen patch plan, its content hash, and SSM-style compliance states.

A :class:`PatchPlan` is built once per rollout (``patchpilot.agents.planning.build_plan``) and never
changes: every wave installs exactly its items (SSM's baseline snapshot). ``content_hash`` is a
sha256 over a canonical JSON of the items, checked whenever a plan is validated (e.g. loaded
from a checkpoint).

Example::

    plan = PatchPlan.create(run_id="r1", created_at=now, items=[item])
    plan.content_hash   # 'sha256 hex', same for the same items in any order
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from patchpilot.core.models import Ecosystem, PendingUpdate, Severity, SSVCOutcome, UpdateOrigin

__all__ = [
    "NOT_SECURITY_REASON",
    "ComplianceState",
    "ExcludedItem",
    "ExclusionReason",
    "PatchPlan",
    "PlanItem",
    "PredictedEffects",
    "closes_security_advisory",
    "compliance_state",
    "items_hash",
    "keep_security_updates",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlanItem(_Frozen):
    """One approved update of one binary package on one host, at an exact version."""

    host: str
    package: str = Field(description="binary package name")
    arch: str = ""
    from_version: str | None = Field(description="installed version; None = new install")
    to_version: str = Field(description="exact version the host's repositories offer")
    ecosystem: Ecosystem = Field(
        default=Ecosystem.DEBIAN,
        description="the package ecosystem (it picks the host's package manager and the "
        "version ordering); plans and checkpoints older than this field are debian",
    )
    source_package: str | None = None
    origin: UpdateOrigin = UpdateOrigin.UNKNOWN
    security: bool = False
    cves: tuple[str, ...] = ()
    severity: Severity | None = Field(default=None, description="highest of its findings")
    ssvc: SSVCOutcome | None = Field(default=None, description="highest of its findings")
    kev: bool = False
    rule: str = Field(description="baseline rule that approved it ('approved-packages', ...)")
    reason: str = Field(description="human explanation of the approval")

    @property
    def key(self) -> tuple[str, str]:
        """``(host, package)``: unique within a plan."""
        return (self.host, self.package)


class ExclusionReason(StrEnum):
    """Why a pending update is not in the plan."""

    REJECTED = "rejected"
    """On the baseline's rejected list."""
    BLOCKED_DEPENDENCY = "blocked-dependency"
    """Needs a rejected package and the rejected action is ``block``."""
    NOT_APPROVED = "not-approved"
    """No baseline rule approves it (and it is not on the approved list)."""
    NOT_YET_APPROVED = "not-yet-approved"
    """A rule matches, but its approval delay has not passed."""
    NON_SECURITY = "non-security"
    """Not a security update and the baseline excludes non-security updates."""
    NOT_IN_ONLY = "not-in-only"
    """``--only`` was given and does not name this package."""
    VERSION_NOT_OFFERED = "version-not-offered"
    """``--only PKG=VERSION`` names a version the host's repositories do not offer."""
    HELD = "held"
    """``--only`` names a package the host holds (``apt-mark hold``): apt never offers it."""
    NOT_INSTALLED = "not-installed"
    """A rollback of a package the host does not have."""
    NOT_A_ROLLBACK = "not-a-rollback"
    """A rollback target that is not older than the installed version."""
    NOT_SECURITY = "not-security"
    """A security-only run (``--security-only``): it closes no known security advisory."""


class ExcludedItem(_Frozen):
    """A pending update left out of the plan, and why."""

    host: str
    package: str
    arch: str = ""
    from_version: str | None
    to_version: str = Field(description="the candidate (or the version --only asked for)")
    source_package: str | None = None
    origin: UpdateOrigin = UpdateOrigin.UNKNOWN
    security: bool = False
    cves: tuple[str, ...] = ()
    exclusion: ExclusionReason
    reason: str
    approve_on: AwareDatetime | None = Field(
        default=None, description="when a delayed approval takes effect (not-yet-approved)"
    )


def _canonical(items: Iterable[PlanItem]) -> list[PlanItem]:
    return sorted(items, key=lambda i: (i.host, i.package, i.arch, i.to_version))


def _hashed(item: PlanItem) -> dict[str, object]:
    """The item's JSON for the hash; a debian ``ecosystem`` (the default) is left out, so
    plans frozen before the field existed keep their hash."""
    data: dict[str, object] = item.model_dump(mode="json")
    if item.ecosystem is Ecosystem.DEBIAN:
        data.pop("ecosystem")
    return data


def items_hash(items: Iterable[PlanItem]) -> str:
    """sha256 (hex) of the canonical JSON of the items (sorted by host and package).

    >>> items_hash([]) == hashlib.sha256(b"[]").hexdigest()
    True
    """
    payload = [_hashed(item) for item in _canonical(items)]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PatchPlan(_Frozen):
    """The frozen set of updates a rollout installs (SSM baseline snapshot).

    ``items`` and ``excluded`` are sorted by host and package; ``content_hash`` must equal
    :func:`items_hash` of ``items`` (checked on validation). Build with :meth:`create`.
    """

    plan_id: str
    run_id: str
    created_at: AwareDatetime
    items: tuple[PlanItem, ...]
    excluded: tuple[ExcludedItem, ...] = ()
    unmatched_only: tuple[str, ...] = Field(
        default=(),
        description="--only specs that matched no pending update (by binary or source name) on "
        "any host",
    )
    suggestions: dict[str, str] = Field(
        default_factory=dict,
        description="unmatched --only spec -> what to tell the person: up to date where "
        "installed, a question naming a close binary or source ('zlib is the source of "
        "zlib1g: patch zlib1g?'), or 'no pending update matches NAME'",
    )
    up_to_date: tuple[str, ...] = Field(
        default=(),
        description="unmatched --only specs installed on a target host with no pending "
        "update (nothing to patch; not a mistake)",
    )
    content_hash: str

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        keys = [i.key for i in self.items]
        if len(set(keys)) != len(keys):
            raise ValueError("a plan holds at most one item per host and package")
        if list(self.items) != _canonical(self.items):
            raise ValueError("plan items must be sorted by host and package")
        if self.content_hash != items_hash(self.items):
            raise ValueError("content_hash does not match the items (the plan was altered)")
        return self

    @classmethod
    def create(
        cls,
        *,
        run_id: str,
        created_at: AwareDatetime,
        items: Iterable[PlanItem],
        excluded: Iterable[ExcludedItem] = (),
        unmatched_only: Iterable[str] = (),
        suggestions: Mapping[str, str] | None = None,
        up_to_date: Iterable[str] = (),
    ) -> PatchPlan:
        """Build a plan: sort, hash, and derive ``plan_id`` from the run id and the hash."""
        ordered = tuple(_canonical(items))
        digest = items_hash(ordered)
        plan_id = "plan-" + hashlib.sha256(f"{run_id}\n{digest}".encode()).hexdigest()[:16]
        return cls(
            plan_id=plan_id,
            run_id=run_id,
            created_at=created_at,
            items=ordered,
            excluded=tuple(
                sorted(excluded, key=lambda e: (e.host, e.package, e.arch, e.to_version))
            ),
            unmatched_only=tuple(sorted(set(unmatched_only))),
            suggestions=dict(sorted((suggestions or {}).items())),
            up_to_date=tuple(sorted(set(up_to_date))),
            content_hash=digest,
        )

    @property
    def hosts(self) -> tuple[str, ...]:
        """Hosts with at least one item, sorted."""
        return tuple(sorted({i.host for i in self.items}))

    def items_for(self, host: str) -> tuple[PlanItem, ...]:
        """The items of one host."""
        return tuple(i for i in self.items if i.host == host)


class PredictedEffects(_Frozen):
    """What the compatibility test predicts a host's part of the plan will do."""

    removals: bool = False
    held: bool = False
    reboot: bool = False


# --------------------------------------------------------------------------- compliance


class ComplianceState(StrEnum):
    """SSM patch compliance states, per host and plan item (research note b4)."""

    INSTALLED = "installed"
    """Approved and installed at the target or a newer version (by us or by hand). Compliant."""
    INSTALLED_OTHER = "installed-other"
    """Installed but not approved by the baseline (manual, as a dependency, or rejected with
    ``allow-as-dependency``). Compliant."""
    INSTALLED_PENDING_REBOOT = "installed-pending-reboot"
    """Installed, but a reboot is pending so it may not be in effect yet. Non-compliant."""
    INSTALLED_REJECTED = "installed-rejected"
    """On the rejected list (``block``) and present on the host. Non-compliant."""
    MISSING = "missing"
    """Approved and applicable, not installed at the target (older version present).
    Non-compliant."""
    FAILED = "failed"
    """Approved; the install was attempted in the last run and failed. Non-compliant."""
    NOT_APPLICABLE = "not-applicable"
    """The package is not present on the host. Compliant."""
    UNKNOWN = "unknown"
    """The host could not be reached (unreachable, host key refused, login refused): nothing is
    known about it. Non-compliant; never ``not-applicable``."""

    @property
    def compliant(self) -> bool:
        """Whether the state counts as compliant (SSM table)."""
        return self in _COMPLIANT


_COMPLIANT = frozenset(
    {ComplianceState.INSTALLED, ComplianceState.INSTALLED_OTHER, ComplianceState.NOT_APPLICABLE}
)


def compliance_state(
    installed_version: str | None,
    target_version: str | None,
    *,
    failed: bool = False,
    reboot_pending: bool = False,
    rejected: bool = False,
    blocked: bool = False,
    ecosystem: Ecosystem = Ecosystem.DEBIAN,
) -> ComplianceState:
    """The compliance state of one package on one host after a run.

    Args:
        installed_version: Version installed after the run (``None``: not installed).
        target_version: The plan item's target (``None``: not approved by the baseline).
        failed: The install of this item was attempted in the last run and failed.
        reboot_pending: It was installed since the last reboot and a reboot is required.
        rejected: The package is on the baseline's rejected list.
        blocked: The rejected action is ``block`` (else ``allow-as-dependency``).
        ecosystem: Version ordering used to tell "at or above target" from "older".

    Order of precedence: rejected, failed, not installed, not approved, version check.

    >>> compliance_state("1.1.0", "1.1.0").value
    'installed'
    >>> compliance_state("1.0.0", "1.1.0").value
    'missing'
    >>> compliance_state("1.1.0", "1.1.0", reboot_pending=True).value
    'installed-pending-reboot'
    >>> compliance_state("1.0.0", None, rejected=True, blocked=True).value
    'installed-rejected'
    """
    from patchpilot.core.versions import compare

    if rejected:
        if installed_version is None:
            return ComplianceState.NOT_APPLICABLE
        return ComplianceState.INSTALLED_REJECTED if blocked else ComplianceState.INSTALLED_OTHER
    if failed:
        return ComplianceState.FAILED
    if installed_version is None:
        return ComplianceState.NOT_APPLICABLE
    if target_version is None:
        return ComplianceState.INSTALLED_OTHER
    if compare(ecosystem, installed_version, target_version) < 0:
        return ComplianceState.MISSING
    if reboot_pending:
        return ComplianceState.INSTALLED_PENDING_REBOOT
    return ComplianceState.INSTALLED


NOT_SECURITY_REASON = "not a security update"
"""The exclusion reason of an item a security-only run leaves out."""


def closes_security_advisory(update: PendingUpdate | PlanItem) -> bool:
    """Whether an update closes a known security advisory: offered by a ``-security`` suite or
    a security origin, or it fixes CVEs (changelog) or findings (a plan item's severity comes
    from its findings). The one rule of every security-only filter: ``run --security-only``,
    security schedules, the chat's "security updates"."""
    if update.security or update.origin is UpdateOrigin.SECURITY or bool(update.cves):
        return True
    return isinstance(update, PlanItem) and (update.severity is not None or update.kev)


def keep_security_updates(plan: PatchPlan) -> PatchPlan:
    """``plan`` with only the items that close a known security advisory; each other item is
    moved to ``excluded`` (``not-security``: ``not a security update``), never dropped."""
    keep = [i for i in plan.items if closes_security_advisory(i)]
    if len(keep) == len(plan.items):
        return plan
    left_out = [
        ExcludedItem(
            host=i.host,
            package=i.package,
            arch=i.arch,
            from_version=i.from_version,
            to_version=i.to_version,
            source_package=i.source_package,
            origin=i.origin,
            security=i.security,
            cves=i.cves,
            exclusion=ExclusionReason.NOT_SECURITY,
            reason=f"{NOT_SECURITY_REASON} (security-only run)",
        )
        for i in plan.items
        if not closes_security_advisory(i)
    ]
    return PatchPlan.create(
        run_id=plan.run_id,
        created_at=plan.created_at,
        items=keep,
        excluded=(*plan.excluded, *left_out),
        unmatched_only=plan.unmatched_only,
        suggestions=plan.suggestions,
        up_to_date=plan.up_to_date,
    )
