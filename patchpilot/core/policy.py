"""Policy: risk weights, SLA days, KEV handling, the patch baseline, approvals, schedule, health.

Health checks are chosen per host and change with :meth:`Policy.checks_for` (pure: the rules of
``health.checks`` whose selectors all match, in file order; nothing runs here).

The bundled default is ``configs/policy.yaml``; a site copy is selected with the ``policy``
setting (``PATCHPILOT_POLICY``). Loading validates everything and fails with the file, key and
reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from patchpilot.core.checks import CommandCheck, HealthCheck, HttpCheck, ProcessCheck
from patchpilot.core.configfile import read_yaml_mapping
from patchpilot.core.errors import ConfigError
from patchpilot.core.models import (
    ChangelogUrgency,
    Exposure,
    Host,
    Severity,
    SSVCOutcome,
    UpdateOrigin,
)
from patchpilot.core.schedule import (
    Blackout,
    BlackoutPeriod,
    MaintenanceWindow,
    RatePolicy,
    RebootPolicy,
    RingSpec,
    SchedulePolicy,
)
from patchpilot.core.settings import format_validation_error

__all__ = [
    "ApprovalRule",
    "ApprovalsPolicy",
    "ApproverGroup",
    "Baseline",
    "Blackout",
    "BlackoutPeriod",
    "HealthPolicy",
    "HealthRule",
    "KEVPolicy",
    "MaintenanceWindow",
    "OperationalCost",
    "Policy",
    "RatePolicy",
    "Reachability",
    "RebootPolicy",
    "RejectedAction",
    "RingSpec",
    "RiskPolicy",
    "SLAPolicy",
    "SchedulePolicy",
    "load_policy",
    "package_spec_matches",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskWeights(_Strict):
    """Relative factor weights; normalised so only ratios matter.

    The first five need feeds (severity, EPSS, KEV) or the inventory (criticality, exposure);
    ``urgency``, ``cves`` and ``reachable`` are read from the host itself (changelogs, process
    maps), so findings can be told apart without any feed.
    """

    severity: float = Field(default=0.35, ge=0)
    epss: float = Field(default=0.25, ge=0)
    kev: float = Field(default=0.20, ge=0)
    criticality: float = Field(default=0.10, ge=0)
    exposure: float = Field(default=0.10, ge=0)
    urgency: float = Field(
        default=0.05, ge=0, description="highest changelog urgency= of the update's entries"
    )
    cves: float = Field(default=0.10, ge=0, description="how many CVEs the update fixes")
    reachable: float = Field(
        default=0.15, ge=0, description="loaded by a listening / a running process / by none"
    )

    @model_validator(mode="after")
    def _not_all_zero(self) -> Self:
        if sum(self.normalised().values()) == 0:
            raise ValueError("at least one risk weight must be above 0")
        return self

    def normalised(self) -> dict[str, float]:
        """Weights scaled to sum to 1 (all zeros stay zeros)."""
        raw = self.model_dump()
        total = sum(raw.values())
        return {k: (v / total if total else 0.0) for k, v in raw.items()}


class Reachability(_Strict):
    """Value (0-1) of the ``reachable`` factor for each level (the best level found counts)."""

    network: float = Field(
        default=1.0, ge=0, le=1, description="loaded by a process listening on a routable address"
    )
    local: float = Field(
        default=0.6, ge=0, le=1, description="loaded by a process listening on loopback only"
    )
    running: float = Field(
        default=0.3, ge=0, le=1, description="loaded by a running process that listens on nothing"
    )
    idle: float = Field(default=0.0, ge=0, le=1, description="no running process loads it")


class OperationalCost(_Strict):
    """Points taken off a score when applying the fix disrupts the host (a tie-breaker).

    Cost is not risk: these are a few points, smaller than the step of any risk factor, so
    among otherwise equal findings the one that can be fixed without downtime ranks first.
    """

    restart: float = Field(
        default=1.0, ge=0, le=10, description="running processes load it: they must restart"
    )
    reboot: float = Field(
        default=2.0, ge=0, le=10, description="the kernel, libc or init: the host must reboot"
    )


def _default_urgency() -> dict[ChangelogUrgency, float]:
    return {
        ChangelogUrgency.LOW: 0.25,
        ChangelogUrgency.MEDIUM: 0.5,
        ChangelogUrgency.HIGH: 0.8,
        ChangelogUrgency.EMERGENCY: 1.0,
        ChangelogUrgency.CRITICAL: 1.0,
    }


class RiskPolicy(_Strict):
    """How the 0-100 risk score is built."""

    weights: RiskWeights = Field(default_factory=RiskWeights)
    exposure: dict[Exposure, float] = Field(
        default_factory=lambda: {
            Exposure.INTERNET: 1.0,
            Exposure.INTERNAL: 0.5,
            Exposure.ISOLATED: 0.1,
        }
    )
    epss_likely: float = Field(default=0.1, ge=0, le=1)
    urgency: dict[ChangelogUrgency, float] = Field(
        default_factory=_default_urgency,
        description="value (0-1) of each changelog urgency for the urgency factor",
    )
    cve_count_saturation: int = Field(
        default=15,
        ge=1,
        le=1000,
        description="CVE count at which the cves factor reaches 1 (log scale below it)",
    )
    reachability: Reachability = Field(default_factory=Reachability)
    operational_cost: OperationalCost = Field(default_factory=OperationalCost)
    reboot_sources: tuple[str, ...] = Field(
        default=(
            "linux",
            "linux-signed*",
            "linux-meta*",
            "linux-hwe*",
            "kernel",
            "glibc",
            "systemd",
            "dbus",
            "dbus-broker",
            "intel-microcode",
            "amd64-microcode",
        ),
        description="source package globs whose update needs a reboot to take effect",
    )
    llm_max_raise: float = Field(
        default=15.0,
        ge=0,
        le=50,
        description="points an LLM may add to a finding's score, with a reason (never subtract)",
    )

    @model_validator(mode="after")
    def _exposure_complete(self) -> Self:
        missing = set(Exposure) - set(self.exposure)
        if missing:
            raise ValueError(f"exposure factors missing for: {sorted(m.value for m in missing)}")
        if any(not 0 <= v <= 1 for v in self.exposure.values()):
            raise ValueError("exposure factors must be between 0 and 1")
        missing_urgency = set(ChangelogUrgency) - set(self.urgency)
        if missing_urgency:
            raise ValueError(
                f"urgency values missing for: {sorted(u.value for u in missing_urgency)}"
            )
        if any(not 0 <= v <= 1 for v in self.urgency.values()):
            raise ValueError("urgency values must be between 0 and 1")
        return self


SLADays = Annotated[int | None, Field(ge=1, description="days from first seen; null = none")]


class SeveritySLA(_Strict):
    """Days to fix per severity; every severity must be listed (``null`` = no deadline)."""

    critical: SLADays
    high: SLADays
    medium: SLADays
    low: SLADays
    unimportant: SLADays
    unknown: SLADays


class SSVCSLA(_Strict):
    """Days to fix per SSVC outcome; every outcome must be listed (``null`` = no deadline)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    act: SLADays
    attend: SLADays
    track_star: SLADays = Field(alias="track*")
    track: SLADays


class SLAPolicy(_Strict):
    """Days to fix, from first seen, by severity and by SSVC outcome."""

    severity: SeveritySLA
    ssvc: SSVCSLA

    def days_for_severity(self, severity: Severity) -> int | None:
        """SLA days for a severity (``None`` = no deadline)."""
        value: int | None = getattr(self.severity, severity.value)
        return value

    def days_for_ssvc(self, outcome: SSVCOutcome) -> int | None:
        """SLA days for an SSVC outcome (``None`` = no deadline)."""
        field = "track_star" if outcome is SSVCOutcome.TRACK_STAR else outcome.value
        value: int | None = getattr(self.ssvc, field)
        return value


class KEVPolicy(_Strict):
    """Handling of CISA KEV-listed CVEs."""

    minimum_ssvc: SSVCOutcome = SSVCOutcome.ATTEND
    due_date_is_hard_bound: bool = True
    ransomware_bonus: float = Field(default=10.0, ge=0, le=50)


_PACKAGE_SPEC = re.compile(
    r"^(?P<name>[A-Za-z0-9*?\[\]][A-Za-z0-9.+*?\[\]_-]*)(?:=(?P<version>[A-Za-z0-9.+:~_-]+))?$"
)


def _check_specs(specs: tuple[str, ...]) -> tuple[str, ...]:
    for spec in specs:
        if not _PACKAGE_SPEC.match(spec):
            raise ValueError(
                f"{spec!r} is not a package spec: use NAME or NAME=VERSION (NAME may be a glob)"
            )
    return specs


def package_spec_matches(spec: str, name: str, version: str | None = None) -> bool:
    """Whether ``NAME`` / ``NAME=VERSION`` (``NAME`` may be a glob) matches a package.

    >>> package_spec_matches("openssl", "openssl", "3.0.15-1")
    True
    >>> package_spec_matches("libssl*=3.0.15-1", "libssl3", "3.0.14-1")
    False
    """
    match = _PACKAGE_SPEC.match(spec)
    if not match:
        return False
    if not fnmatchcase(name, match["name"]):
        return False
    return match["version"] is None or match["version"] == version


class RejectedAction(StrEnum):
    """What a rejected package may still do (SSM ``RejectedPatchesAction``)."""

    ALLOW_AS_DEPENDENCY = "allow-as-dependency"
    """Never installed or upgraded on its own; may come in as another package's dependency
    (then it reports ``installed-other``, compliant)."""
    BLOCK = "block"
    """Never installed, nor anything whose install needs it; if present it reports
    ``installed-rejected`` (non-compliant)."""


class ApprovalRule(_Strict):
    """One baseline approval rule (SSM ``PatchRule``): all given filters must match.

    An empty filter matches everything. The delay counts from the update's *first seen* (apt has
    no release dates): approved once ``first_seen + approve_after_days`` has passed (UTC), or,
    with ``approve_until_date``, when first seen on or before that date.

    >>> ApprovalRule(name="crit", min_severity="high", approve_after_days=3).approve_after_days
    3
    """

    name: str = Field(min_length=1)
    min_severity: Severity | None = Field(
        default=None,
        description="severity at least this (an update's highest; 'unknown' only matches "
        "min_severity: unknown)",
    )
    ssvc: tuple[SSVCOutcome, ...] = Field(default=(), description="SSVC outcome any of")
    kev: bool | None = Field(default=None, description="true: a CVE is in KEV; false: none is")
    origin: tuple[UpdateOrigin, ...] = Field(default=(), description="update origin any of")
    packages: tuple[str, ...] = Field(
        default=(), description="binary or source package name globs, any of"
    )
    approve_after_days: int | None = Field(default=None, ge=0, le=360)
    approve_until_date: date | None = None

    @model_validator(mode="after")
    def _one_delay(self) -> Self:
        if self.approve_after_days is not None and self.approve_until_date is not None:
            raise ValueError("give approve_after_days or approve_until_date, not both")
        return self

    @property
    def delay_days(self) -> int:
        """The approval delay in days (0 when ``approve_until_date`` is used or none is set)."""
        return self.approve_after_days or 0


class Baseline(_Strict):
    """The patch baseline (SSM): approval rules, approved and rejected packages."""

    rules: tuple[ApprovalRule, ...] = ()
    approved_packages: tuple[str, ...] = Field(
        default=(), description="NAME or NAME=VERSION: always approved (unless rejected)"
    )
    rejected_packages: tuple[str, ...] = Field(
        default=(), description="NAME or NAME=VERSION (NAME may be a glob): never approved"
    )
    rejected_action: RejectedAction = RejectedAction.ALLOW_AS_DEPENDENCY
    include_non_security: bool = Field(
        default=False,
        description="rules may approve updates that fix no known vulnerability and do not come "
        "from a security suite",
    )

    @field_validator("approved_packages", "rejected_packages")
    @classmethod
    def _specs(cls, specs: tuple[str, ...]) -> tuple[str, ...]:
        return _check_specs(specs)

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, rules: tuple[ApprovalRule, ...]) -> tuple[ApprovalRule, ...]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {dupes}")
        return rules

    def is_rejected(self, name: str, version: str | None = None) -> bool:
        """Whether a package (at a version) is on the rejected list."""
        return any(package_spec_matches(s, name, version) for s in self.rejected_packages)

    def is_explicitly_approved(self, name: str, version: str | None = None) -> bool:
        """Whether a package (at a version) is on the approved list."""
        return any(package_spec_matches(s, name, version) for s in self.approved_packages)


class ApproverGroup(_Strict):
    """The people who must take part in approving runs that touch hosts with given tags.

    >>> ApproverGroup(name="db-owners", tags=("db",), approvers=("dana",)).name
    'db-owners'
    """

    name: str = Field(min_length=1, max_length=64)
    tags: tuple[str, ...] = Field(min_length=1, description="hosts with any of these tags")
    approvers: tuple[str, ...] = Field(
        min_length=1, description="identities of the group; one of them must approve"
    )


class ApprovalsPolicy(_Strict):
    """When a person must approve a plan before deployment (any condition is enough), and who
    must: ``required`` distinct people (one rejection rejects), never the run's requester once
    the store has users (the service) or with ``refuse_self_approval``, and one member of each
    :class:`ApproverGroup` whose tags the run's hosts carry.
    """

    always: bool = False
    tags: tuple[str, ...] = Field(default=(), description="hosts with any of these tags")
    min_criticality: int | None = Field(default=None, ge=1, le=5)
    on_removals: bool = True
    on_held: bool = True
    on_reboot: bool = False
    expires_after_hours: int = Field(default=24, ge=1, le=24 * 30)
    approvers: tuple[str, ...] = Field(
        default=(),
        description="identities allowed to approve or reject (empty: anyone who can run "
        "patchpilot on this machine)",
    )
    required: int = Field(
        default=1,
        ge=1,
        le=10,
        description="distinct approvers needed before the run continues (one rejection rejects)",
    )
    refuse_self_approval: bool = Field(
        default=False,
        description="the run's requester may not decide it even on a store without users (a "
        "local install); once users exist (the service) it is always refused",
    )
    groups: tuple[ApproverGroup, ...] = Field(
        default=(),
        description="per scope: a run touching hosts with a group's tags needs, besides the "
        "required count, one approval from a member of that group",
    )

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, groups: tuple[ApproverGroup, ...]) -> tuple[ApproverGroup, ...]:
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"approver group names must be unique: {names}")
        return groups


_PACKAGE_GLOB = re.compile(r"^[A-Za-z0-9*?\[\]][A-Za-z0-9.+*?\[\]_-]*$")


class HealthRule(_Strict):
    """One health-check rule: its ``check`` runs on a host when all given selectors match.

    An empty selector matches everything: ``hosts`` are globs of inventory host names (any of),
    ``tags`` host tags (any of), ``packages`` globs of the package names the host's change
    touches (any of; a rule with packages never applies to a change touching none).

    >>> rule = HealthRule(name="ssh", tags=("web",), check={"kind": "process", "name": "sshd"})
    >>> rule.check.kind
    'process'
    """

    name: str = Field(min_length=1)
    hosts: tuple[str, ...] = Field(default=(), description="inventory host name globs, any of")
    tags: tuple[str, ...] = Field(default=(), description="host tags, any of")
    packages: tuple[str, ...] = Field(
        default=(), description="package name globs, any of the packages the change touches"
    )
    check: HealthCheck

    @field_validator("check", mode="before")
    @classmethod
    def _has_kind(cls, value: object) -> object:
        if isinstance(value, dict) and "kind" not in value:
            raise ValueError("a check needs `kind`: http, command or process")
        return value

    @field_validator("hosts", "tags")
    @classmethod
    def _not_blank(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        if any(not v.strip() for v in values):
            raise ValueError("entries must not be empty")
        return values

    @field_validator("packages")
    @classmethod
    def _package_globs(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not _PACKAGE_GLOB.match(value):
                raise ValueError(f"{value!r} is not a package name glob (no =VERSION here)")
        return values

    def applies(self, host: Host, packages: Iterable[str]) -> bool:
        """Whether every given selector matches ``host`` and the packages of its change."""
        if self.hosts and not any(fnmatchcase(host.name, glob) for glob in self.hosts):
            return False
        if self.tags and host.tags.isdisjoint(self.tags):
            return False
        if self.packages:
            return any(fnmatchcase(name, glob) for name in packages for glob in self.packages)
        return True


class HealthPolicy(_Strict):
    """Health checks run before and after a change on a host (none by default)."""

    checks: tuple[HealthRule, ...] = ()

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, rules: tuple[HealthRule, ...]) -> tuple[HealthRule, ...]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate health check names: {dupes}")
        return rules


class Policy(_Strict):
    """The whole policy file."""

    risk: RiskPolicy = Field(default_factory=RiskPolicy)
    sla_days: SLAPolicy
    kev: KEVPolicy = Field(default_factory=KEVPolicy)
    baseline: Baseline = Field(default_factory=Baseline)
    approvals: ApprovalsPolicy = Field(default_factory=ApprovalsPolicy)
    schedule: SchedulePolicy = Field(default_factory=SchedulePolicy)
    health: HealthPolicy = Field(default_factory=HealthPolicy)

    def checks_for(
        self, host: Host, packages: Iterable[str]
    ) -> list[HttpCheck | CommandCheck | ProcessCheck]:
        """The health checks of every ``health.checks`` rule that applies, in file order.

        Pure: nothing runs. ``packages`` are the names of the packages the host's change
        touches (installs, upgrades or removes); rules with a ``packages`` selector apply only
        when one of them matches.
        """
        names = tuple(packages)
        return [rule.check for rule in self.health.checks if rule.applies(host, names)]


def load_policy(path: Path) -> Policy:
    """Load and validate a policy file.

    Raises:
        ConfigError: missing file, bad YAML, or an invalid value (file, key and reason given).
    """
    data = read_yaml_mapping(path)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        key, reason = format_validation_error(exc)
        raise ConfigError(reason, file=str(path), key=key) from exc
