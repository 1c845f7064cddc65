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
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from patchpilot.core.checks import (
    CommandCheck,
    HealthCheck,
    HttpCheck,
    ProcessCheck,
    check_url_template,
)
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
    "AnalysisMetric",
    "AnalysisPolicy",
    "ApprovalRule",
    "ApprovalsPolicy",
    "ApproverGroup",
    "Baseline",
    "BaselineMode",
    "Blackout",
    "BlackoutPeriod",
    "EffectSize",
    "EffectSizeMeasure",
    "ExposureSLA",
    "HealthPolicy",
    "HealthRule",
    "HostMetric",
    "HostSignal",
    "HttpMetric",
    "KEVPolicy",
    "MaintenanceWindow",
    "MetricDirection",
    "OperationalCost",
    "Policy",
    "PrometheusMetric",
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


class ExposureSLA(_Strict):
    """Longest days to fix on a host of each exposure (``null`` = no extra bound)."""

    internet: SLADays = None
    internal: SLADays = None
    isolated: SLADays = None


class SLAPolicy(_Strict):
    """Days to fix, from first seen, by severity and by SSVC outcome; KEV, exposure and
    criticality bounds (see README "Compliance and SLAs").

    An item's due date is the earliest of the bounds that apply: the severity and SSVC days
    (the stricter of the two), ``kev`` days after a CVE entered CISA's KEV catalog and the
    catalog's own ``dueDate`` (CISA BOD 22-01), and the ``exposure`` / ``criticality`` days of
    its host. The bundled defaults (``configs/policy.yaml``) are at least as strict as PCI DSS
    4.0 requirement 6.3.3 (critical: within one month).
    """

    severity: SeveritySLA
    ssvc: SSVCSLA
    kev: SLADays = Field(
        default=14,
        description="days from a CVE's KEV dateAdded (BOD 22-01: two weeks for new entries); "
        "the catalog's dueDate bounds the due date too",
    )
    exposure: ExposureSLA = Field(default_factory=ExposureSLA)
    criticality: dict[int, int] = Field(
        default_factory=dict,
        description="host criticality (1-5) -> longest days to fix on such a host",
    )
    due_soon_days: int = Field(
        default=7, ge=0, le=365, description="open items due within this many days are due soon"
    )

    @field_validator("criticality")
    @classmethod
    def _criticality(cls, value: dict[int, int]) -> dict[int, int]:
        for level, days in value.items():
            if not 1 <= level <= 5:
                raise ValueError(f"criticality {level}: levels are 1 to 5")
            if days < 1:
                raise ValueError(f"criticality {level}: days must be at least 1")
        return value

    def days_for_exposure(self, exposure: Exposure) -> int | None:
        """Longest days to fix on a host of this exposure (``None`` = no bound)."""
        value: int | None = getattr(self.exposure, exposure.value)
        return value

    def days_for_criticality(self, criticality: int) -> int | None:
        """Longest days to fix on a host of this criticality (``None`` = no bound)."""
        return self.criticality.get(criticality)

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
    must: ``required`` distinct people (one rejection rejects), never the run's requester (unless
    a store without users has ``refuse_self_approval: false``), and one member of each
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
        default=True,
        description="the run's requester (the OS user on a local install without users) may "
        "not decide it; false lets a one-person install approve its own runs; once users exist "
        "(the service) self-approval is always refused",
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


class HostSelectors(_Strict):
    """Which hosts and changes a rule (a health check, an analysis metric) applies to.

    An empty selector matches everything: ``hosts`` are globs of inventory host names (any of),
    ``tags`` host tags (any of), ``packages`` globs of the package names the host's change
    touches (any of; a rule with packages never applies to a change touching none).
    """

    hosts: tuple[str, ...] = Field(default=(), description="inventory host name globs, any of")
    tags: tuple[str, ...] = Field(default=(), description="host tags, any of")
    packages: tuple[str, ...] = Field(
        default=(), description="package name globs, any of the packages the change touches"
    )

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


class HealthRule(HostSelectors):
    """One health-check rule: its ``check`` runs on a host when all given selectors match
    (:class:`HostSelectors`).

    >>> rule = HealthRule(name="ssh", tags=("web",), check={"kind": "process", "name": "sshd"})
    >>> rule.check.kind
    'process'
    """

    name: str = Field(min_length=1)
    check: HealthCheck

    @field_validator("check", mode="before")
    @classmethod
    def _has_kind(cls, value: object) -> object:
        if isinstance(value, dict) and "kind" not in value:
            raise ValueError("a check needs `kind`: http, command or process")
        return value


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


# --- post-patch analysis (issue 17) ------------------------------------------------------------

_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9@._:-]{1,256}$")
_PROBE_URL_FIELDS = frozenset({"host", "address", "name"})


class MetricDirection(StrEnum):
    """Which way a metric is worse (Kayenta's ``direction``): only that way can fail it."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class BaselineMode(StrEnum):
    """What the canary is compared with: unpatched peers of the same ring over the same window
    (Spinnaker's advice), or the host's own window before the patch."""

    PEERS = "peers"
    SELF = "self"


class EffectSizeMeasure(StrEnum):
    """How big a shift is, canary against baseline (Kayenta's ``effectSize.measure``)."""

    MEAN_RATIO = "mean_ratio"
    """canary mean / baseline mean (Kayenta's default; undefined when either mean is 0)."""
    MEDIAN_RATIO = "median_ratio"
    """canary median / baseline median (undefined when either median is 0)."""
    CLES = "cles"
    """common-language effect size: P(canary > baseline) + P(tie)/2, 0.5 = no shift."""


class HostSignal(StrEnum):
    """Read-only host signals (:mod:`patchpilot.tools.metrics.host`)."""

    CPU = "cpu"
    """busy CPU fraction (0-1) between two /proc/stat reads, one sample per interval."""
    MEMORY_AVAILABLE = "memory_available"
    """MemAvailable in bytes (/proc/meminfo)."""
    LOAD1 = "load1"
    """1-minute load average (/proc/loadavg)."""
    PSI_CPU = "psi_cpu"
    """/proc/pressure/cpu some avg10 (absent: no data)."""
    PSI_MEMORY = "psi_memory"
    """/proc/pressure/memory some avg10 (absent: no data)."""
    PSI_IO = "psi_io"
    """/proc/pressure/io some avg10 (absent: no data)."""
    FAILED_UNITS = "failed_units"
    """failed systemd units (``systemctl --failed``; no systemd: no data)."""
    RESTARTS = "restarts"
    """service starts logged by systemd since the window's start (journal; none: no data)."""
    OOM_KILLS = "oom_kills"
    """OOM kills logged by the kernel since the window's start (journal; none: no data)."""
    JOURNAL_ERRORS = "journal_errors"
    """journal lines of priority err or worse of ``units`` since the window's start."""


class EffectSize(_Strict):
    """The effect-size thresholds a significant shift must also pass (Kayenta's ``effectSize``).

    ``None`` takes the measure's neutral value (1.0 for the ratios, 0.5 for CLES): then any
    significant shift in the worse direction counts, as in Kayenta.
    """

    measure: EffectSizeMeasure = EffectSizeMeasure.MEAN_RATIO
    allowed_increase: float | None = Field(
        default=None, ge=0, description="High only when the effect size is at least this"
    )
    allowed_decrease: float | None = Field(
        default=None, ge=0, description="Low only when the effect size is at most this"
    )
    critical_increase: float | None = Field(
        default=None, ge=0, description="a critical metric fails the analysis from this effect"
    )
    critical_decrease: float | None = Field(
        default=None, ge=0, description="a critical metric fails the analysis below this effect"
    )
    min_shift: float | None = Field(
        default=None,
        ge=0,
        description="an absolute floor in the metric's unit: a shift (the Hodges-Lehmann "
        "estimate) smaller than this is never High or Low, however significant or large in "
        "ratio (e.g. 0.05 for latency in seconds: 1 ms -> 3 ms is noise, not a regression)",
    )

    def neutral(self) -> float:
        """The measure's no-change value (1.0 for ratios, 0.5 for CLES)."""
        return 0.5 if self.measure is EffectSizeMeasure.CLES else 1.0


def _check_probe_template(template: str) -> str:
    return check_url_template(
        template, _PROBE_URL_FIELDS, "{host} (the address), {address} and {name}"
    )


class _MetricBase(HostSelectors):
    """What every analysis metric has: name, direction, criticality, group and selectors."""

    name: str = Field(description="unique; [A-Za-z][A-Za-z0-9_.:-]*, at most 64 characters")
    direction: MetricDirection = Field(
        default=MetricDirection.INCREASE, description="which way is worse"
    )
    critical: bool = Field(
        default=False, description="High/Low here fails the whole analysis (score 0)"
    )
    must_have_data: bool = Field(
        default=False,
        description="no data counts as a failed metric (Kayenta's NodataFailMetric), not nodata",
    )
    optional: bool = Field(
        default=False,
        description="no data for this metric is left out of the score instead of holding the "
        "verdict at nodata",
    )
    group: str = Field(default="default", description="the score group (group_weights)")
    unit: Literal["seconds", "ratio", "count", "bytes", "percent", "other"] | None = Field(
        default=None, description="for the evidence; None: inferred (http latency: seconds...)"
    )
    effect_size: EffectSize = Field(default_factory=EffectSize)
    fail_above: float | None = Field(
        default=None,
        description="Argo-like failure condition: a canary sample above this is a failed "
        "measurement (more than failure_limit of them fail the metric as High)",
    )
    fail_below: float | None = Field(
        default=None, description="a canary sample below this is a failed measurement (Low)"
    )
    failure_limit: int | None = Field(
        default=None, ge=0, description="failed measurements tolerated; None: the section's"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _METRIC_NAME.match(value):
            raise ValueError(f"metric name {value!r}: [A-Za-z][A-Za-z0-9_.:-]*, <= 64 chars")
        return value

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not _GROUP_NAME.match(value):
            raise ValueError(f"group name {value!r}: [A-Za-z0-9][A-Za-z0-9_.:-]*, <= 64 chars")
        return value

    @model_validator(mode="after")
    def _conditions(self) -> Self:
        if (
            self.fail_above is not None
            and self.fail_below is not None
            and self.fail_below >= self.fail_above
        ):
            raise ValueError("fail_below must be below fail_above")
        return self

    @property
    def effective_unit(self) -> str:
        """``unit``, else what the provider measures (``other`` when unknown)."""
        return self.unit or "other"


class HttpMetric(_MetricBase):
    """HTTP probes from the controller: per request its latency (seconds) or error (1/0).

    ``url`` is a template with ``{host}`` (the inventory address; IPv6 in brackets),
    ``{address}`` (the same) and ``{name}``; ``url_overrides`` maps a host name to its own
    template (the lab's per-host ports). An error is a transport error, a timeout or a status
    other than ``expected_status``.
    """

    provider: Literal["http"] = "http"
    url: str
    url_overrides: dict[str, str] = Field(default_factory=dict)
    method: Literal["GET", "HEAD"] = "GET"
    expected_status: int = Field(default=200, ge=100, le=599)
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="per request")
    measure: Literal["latency", "error"] = "latency"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_probe_template(value)

    @field_validator("url_overrides")
    @classmethod
    def _overrides(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            _check_probe_template(template)
        return value

    @property
    def effective_unit(self) -> str:
        """``unit``, else seconds (latency) or ratio (error)."""
        return self.unit or ("seconds" if self.measure == "latency" else "ratio")


class PrometheusMetric(_MetricBase):
    """A PromQL range query (``/api/v1/query_range``) over the window, step = interval.

    ``promql`` may contain ``$host``, ``$address`` and ``$name`` (replaced by the host's, escaped
    for a PromQL string); every value of every returned series is a sample.
    """

    provider: Literal["prometheus"] = "prometheus"
    base_url: str = Field(description="e.g. http://prometheus:9090 (no query string)")
    promql: str = Field(min_length=1, max_length=4000)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_response_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or any(c in value for c in "?#{} "):
            raise ValueError(f"base_url {value!r}: an http(s) URL without query or placeholders")
        return value.rstrip("/")

    @field_validator("promql")
    @classmethod
    def _promql(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("promql contains a NUL byte")
        return value


class HostMetric(_MetricBase):
    """A read-only signal read on the host over its transport (fixed commands only)."""

    provider: Literal["host"] = "host"
    signal: HostSignal
    units: tuple[str, ...] = Field(
        default=(), description="systemd units (restarts, journal_errors); empty: all"
    )

    @field_validator("units")
    @classmethod
    def _units(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not _UNIT_NAME.match(value) or value.startswith("-"):
                raise ValueError(f"unit name {value!r}: [A-Za-z0-9@._:-], not starting with '-'")
        return values

    @property
    def effective_unit(self) -> str:
        """``unit``, else what the signal measures."""
        if self.unit:
            return self.unit
        return {
            HostSignal.CPU: "ratio",
            HostSignal.MEMORY_AVAILABLE: "bytes",
            HostSignal.PSI_CPU: "percent",
            HostSignal.PSI_MEMORY: "percent",
            HostSignal.PSI_IO: "percent",
        }.get(self.signal, "count")


AnalysisMetric = Annotated[
    HttpMetric | PrometheusMetric | HostMetric, Field(discriminator="provider")
]
"""One metric of the ``analysis`` section; ``provider`` selects the model."""


class AnalysisPolicy(_Strict):
    """Post-patch analysis (off by default): after a ring is patched, wait ``soak_s``, sample
    every metric ``count`` times ``interval_s`` apart on the patched hosts and on the baseline,
    and judge them as Kayenta's NetflixACAJudge does (IQR outlier removal, Mann-Whitney U at
    ``confidence``, effect size, direction, critical metrics, weighted group scores,
    ``pass_score`` / ``marginal_score``).
    """

    enabled: bool = False
    soak_s: float = Field(
        default=60.0, ge=0, le=86400, description="wait after the ring's change before sampling"
    )
    interval_s: float = Field(default=5.0, gt=0, le=3600, description="between two samples")
    count: int = Field(default=60, ge=1, le=100_000, description="samples per metric and host")
    baseline: BaselineMode = BaselineMode.PEERS
    baseline_fallback: BaselineMode | None = Field(
        default=BaselineMode.SELF,
        description="when the ring has no unpatched peers (a one-host canary): this, or none",
    )
    confidence: float = Field(
        default=0.98,
        gt=0.5,
        lt=1,
        description="of the Mann-Whitney confidence interval (NetflixACAJudge uses 0.98)",
    )
    tolerance: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="the interval must clear this fraction of the Hodges-Lehmann estimate",
    )
    outliers: Literal["remove", "keep"] = Field(
        default="remove", description="IQR outlier removal before the test"
    )
    outlier_factor: float = Field(default=3.0, gt=0, le=100, description="IQR fence factor")
    pass_score: float = Field(default=95.0, ge=0, le=100)
    marginal_score: float = Field(default=75.0, ge=0, le=100)
    failure_limit: int = Field(
        default=0, ge=0, description="failed measurements (fail_above/fail_below) tolerated"
    )
    min_samples: int = Field(
        default=50, ge=1, le=100_000, description="fewer samples on either side: no data"
    )
    group_weights: dict[str, float] = Field(
        default_factory=dict, description="group -> weight (0-100); other groups share the rest"
    )
    metrics: tuple[AnalysisMetric, ...] = ()

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(
        cls, metrics: tuple[HttpMetric | PrometheusMetric | HostMetric, ...]
    ) -> tuple[HttpMetric | PrometheusMetric | HostMetric, ...]:
        names = [m.name for m in metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate metric names: {dupes}")
        return metrics

    @field_validator("metrics", mode="before")
    @classmethod
    def _has_provider(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, dict) and "provider" not in item:
                    raise ValueError("a metric needs `provider`: http, host or prometheus")
        return value

    @field_validator("group_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if not _GROUP_NAME.match(name):
                raise ValueError(f"group name {name!r}: [A-Za-z0-9][A-Za-z0-9_.:-]*")
            if not 0 <= weight <= 100:
                raise ValueError(f"group weight of {name!r} must be between 0 and 100")
        if sum(value.values()) > 100:
            raise ValueError("group weights must add up to at most 100")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.marginal_score > self.pass_score:
            raise ValueError("marginal_score must not be above pass_score")
        if self.enabled and not self.metrics:
            raise ValueError("analysis is enabled but has no metrics")
        if self.baseline_fallback is self.baseline:
            raise ValueError("baseline_fallback must differ from baseline (or be null)")
        return self

    def metrics_for(
        self, host: Host, packages: Iterable[str]
    ) -> list[HttpMetric | PrometheusMetric | HostMetric]:
        """The metrics whose selectors match ``host`` and its change, in file order (pure)."""
        names = tuple(packages)
        return [m for m in self.metrics if m.applies(host, names)]


class Policy(_Strict):
    """The whole policy file."""

    risk: RiskPolicy = Field(default_factory=RiskPolicy)
    sla_days: SLAPolicy
    kev: KEVPolicy = Field(default_factory=KEVPolicy)
    baseline: Baseline = Field(default_factory=Baseline)
    approvals: ApprovalsPolicy = Field(default_factory=ApprovalsPolicy)
    schedule: SchedulePolicy = Field(default_factory=SchedulePolicy)
    health: HealthPolicy = Field(default_factory=HealthPolicy)
    analysis: AnalysisPolicy = Field(default_factory=AnalysisPolicy)

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
