"""Prioritisation: a 0-100 risk score, an SSVC outcome and a due date for each finding.

Deterministic and pure: the same finding, enrichment, host and policy always give the same
:class:`~patchpilot.core.models.RiskAssessment` (``today`` only adds an "overdue" note).

**Score.** Eight weighted factors, each a value in [0, 1] (``policy.risk.weights`` gives their
weights). Five need feeds or the inventory:

* ``severity``: the highest CVSS base score / 10 over the finding's CVEs; without CVSS the
  distro severity: critical 1.0, high 0.8, medium 0.5, low 0.25, unimportant 0.05;
  ``unknown`` -> *unknown*.
* ``epss``: sqrt(highest EPSS probability). Raw probabilities are heavily skewed (most CVEs are
  below 0.01), so the square root spreads them (0.01 -> 0.1, 0.1 -> 0.32, 0.94 -> 0.97) while
  staying monotonic. The percentile is not used (it ranks a 0.01 probability near the
  top). No EPSS record -> *unknown*.
* ``kev``: 1 when a CVE is in CISA KEV, 0 when none is and the catalog was imported
  (``kev_feed_loaded``); *unknown* when the catalog was never imported or the finding names
  no CVE (repository-only findings).
* ``criticality``: (criticality - 1) / 4 from the inventory (1..5).
* ``exposure``: ``policy.risk.exposure[host.exposure]``.

Three are read from the host itself (:class:`FindingSignals`, built by :class:`HostSignals` from
the scan's snapshot), so findings differ even with no feed at all:

* ``urgency``: the highest changelog ``urgency=`` of the entries between the installed and the
  candidate version (``policy.risk.urgency``: low 0.25, medium 0.5, high 0.8, emergency and
  critical 1.0); only when the host's repositories offer the fix.
* ``cves``: how many CVEs the fix closes (the finding's CVEs plus those the pending update's
  changelog names), on a log scale: ``min(1, log2(1 + n) / log2(1 + saturation))``
  (``policy.risk.cve_count_saturation``, 15: 1 CVE 0.25, 3 CVEs 0.5, 7 CVEs 0.75, 15+ 1.0).
* ``reachable``: the best of ``policy.risk.reachability``: a binary of the finding's source
  package is loaded (mapped in ``/proc/PID/maps``) by a process listening on a routable
  address (``network``, 1.0), on loopback only (``local``, 0.6), by a running process that
  listens on nothing (``running``, 0.3), or by no process (``idle``, 0); a package of
  ``policy.risk.reboot_sources`` (the kernel, init) counts at least as ``running``. Whether the
  host faces the internet is the ``exposure`` factor (and SSVC's exposure).

The Debian security tracker's per-release urgency, when its JSON export was imported, *is* the
distro severity (``severity`` factor, labelled "Debian tracker urgency").

``score = 100 * sum(w_i * v_i for known i) / sum(w_i for known i)``: unknown factors are left
out and the known weights renormalised (an unknown is never scored as 0). When KEV reports
known ransomware use, ``policy.kev.ransomware_bonus`` points are added; the score is capped at
100. **Operational cost** (the ``restart`` entry of the breakdown, weight 0) then takes
``policy.risk.operational_cost`` points *off*: ``reboot`` (2) when the fix's source package
matches ``policy.risk.reboot_sources`` (kernel, glibc, systemd, dbus, microcode), ``restart`` (1)
when running processes load one of its binaries, nothing when no process does. It pushes
*down* because cost is not risk: a disruptive fix is not more dangerous, it is harder to apply
now, so among otherwise equal findings the one that can be fixed without downtime comes first
(fixing it shrinks exposure soonest per unit of disruption). The points stay below one step of
urgency or CVE count on a finding without feeds (2.5 to 3 points), so cost mostly breaks ties
(not taken from an undetermined score); it never changes SSVC or a due date. If no
weighted factor is known at all the score is 50 (undetermined) and the rationale says so. Each
:class:`RiskFactor` carries the policy's normalised weight and its contribution in points
(contributions of the known factors, bonus and cost included, sum to the score).

With feeds, the default weights give the three feed factors 0.80 of 1.30 (62 %), the inventory
0.20 (15 %) and the host signals 0.30 (23 %), so the enriched path stays dominant; the SSVC
outcome and the due date never depend on the host signals.

**Deciding factor.** The rationale starts with the factor that separates the finding most from
a *baseline finding*: distro severity medium, EPSS at ``policy.risk.epss_likely``, not in KEV,
criticality 3, an internal host, changelog urgency medium, one CVE, loaded by no process, no
restart. Each known factor pulls the score from the baseline's score (on the same known
factors) by ``100 * w_i * (v_i - baseline_i) / sum(known w)`` points (bonus and cost: their
points); the deciding factor is the largest pull in the direction of the total (the largest
push up for a finding above the baseline, down for one below).

**SSVC** (CERT/CC deployer "patch application priority" table, ``SSVC_DEPLOYER_TABLE``, the 72
rows of ``deployer_patch_application_priority_1_0_0.csv``), with inputs approximated from data:

* Exploitation: ``active`` if a CVE is in KEV (or a CVSS v4 vector says ``E:A``); ``public
  poc`` if EPSS >= ``policy.risk.epss_likely`` (or CVSS v4 ``E:P``); ``none`` if EPSS is known
  and below; without EPSS data ``public poc`` is *assumed* (unknown is not "none").
* System exposure: internet -> ``open``, internal -> ``controlled``, isolated -> ``small``.
* Automatable: ``yes`` iff a CVSS vector has ``AV:N``, ``PR:N`` and ``UI:N``; without any
  CVSS vector ``yes`` is *assumed*.
* Human impact: ``very high`` if criticality 5 and severity high/critical; ``high`` if
  criticality >= 4 or severity high/critical; ``medium`` if criticality 3 or severity medium or
  unknown; else ``low``. (Severity here is the CVSS band when CVSS is known, else the distro
  severity.)

Deployer outcomes map to patchpilot's outcomes: defer -> ``track``, scheduled -> ``track*``,
out-of-cycle -> ``attend``, immediate -> ``act``. A KEV-listed CVE is raised to at least
``policy.kev.minimum_ssvc``.

**Due date** = ``first_seen`` (UTC date) + the stricter (smaller) of the severity SLA and the
SSVC SLA (``null`` = no deadline; both null = no due date). The severity is the CVSS band
(>= 9 critical, >= 7 high, >= 4 medium, > 0 low) when CVSS is known, else the distro
severity. When a CVE is in KEV and ``policy.kev.due_date_is_hard_bound``, the due date is never
later than the earliest KEV ``dueDate`` (and is that date when the SLAs give none).

**Rationale**: one factual sentence built only from numbers, enums, dates and validated ids;
advisory text (summary, vendor wording) is untrusted and never included; process names and
addresses read from the host are withheld unless they are plain tokens.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any, Final, TypeAlias

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core.logging import debug_enabled
from patchpilot.core.models import (
    CVSS,
    ChangelogUrgency,
    Enrichment,
    Exposure,
    Finding,
    FixState,
    FixStatus,
    Host,
    HostFacts,
    InstalledPackage,
    KEVEntry,
    PendingUpdate,
    RiskAssessment,
    RiskFactor,
    Severity,
    SSVCOutcome,
)
from patchpilot.core.policy import Policy

__all__ = [
    "SEVERITY_VALUES",
    "SSVC_DEPLOYER_TABLE",
    "Automatable",
    "DeployerPriority",
    "Exploitation",
    "FindingSignals",
    "HostSignals",
    "HumanImpact",
    "Listener",
    "PriorityAdvice",
    "PriorityRaise",
    "Reach",
    "RestartNeed",
    "SSVCInputs",
    "SystemExposure",
    "assist_priorities",
    "cve_count_value",
    "finding_key",
    "prioritize",
    "ssvc_deployer",
    "ssvc_inputs",
]

log = structlog.get_logger(__name__)


def finding_key(finding: Finding) -> str:
    """The stable key of a finding: ``"<host>|<source package>|<advisory id>"``."""
    return f"{finding.host}|{finding.source_package}|{finding.advisory_id}"


SEVERITY_VALUES: Final[Mapping[Severity, float]] = {
    Severity.CRITICAL: 1.0,
    Severity.HIGH: 0.8,
    Severity.MEDIUM: 0.5,
    Severity.LOW: 0.25,
    Severity.UNIMPORTANT: 0.05,
}
"""Distro severity -> severity factor when no CVSS score is known (``unknown`` has none)."""

_UNDETERMINED_SCORE: Final = 50.0
_SAFE_TEXT_RE: Final = re.compile(r"^[A-Za-z0-9.+~:_-]{1,128}$")


# --------------------------------------------------------------------------- SSVC


class Exploitation(StrEnum):
    """SSVC Exploitation v1.1.0."""

    NONE = "none"
    POC = "public poc"
    ACTIVE = "active"


class SystemExposure(StrEnum):
    """SSVC System Exposure v1.0.1."""

    SMALL = "small"
    CONTROLLED = "controlled"
    OPEN = "open"


class Automatable(StrEnum):
    """SSVC Automatable v2.0.0."""

    NO = "no"
    YES = "yes"


class HumanImpact(StrEnum):
    """SSVC Human Impact v2.0.2."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    VERY_HIGH = "very high"


class DeployerPriority(StrEnum):
    """SSVC deployer outcomes (Defer, Scheduled, Out-of-Cycle, Immediate v1.0.0)."""

    DEFER = "defer"
    SCHEDULED = "scheduled"
    OUT_OF_CYCLE = "out-of-cycle"
    IMMEDIATE = "immediate"


_D, _S, _O, _I = (
    DeployerPriority.DEFER,
    DeployerPriority.SCHEDULED,
    DeployerPriority.OUT_OF_CYCLE,
    DeployerPriority.IMMEDIATE,
)


def _deployer_table() -> dict[
    tuple[Exploitation, SystemExposure, Automatable, HumanImpact], DeployerPriority
]:
    # Rows of CERTCC/SSVC data/csv/ssvc/deployer_patch_application_priority_1_0_0.csv in CSV
    # order: for each (exploitation, exposure, automatable), human impact low..very high.
    rows = {
        (Exploitation.NONE, SystemExposure.SMALL, Automatable.NO): (_D, _D, _S, _S),
        (Exploitation.NONE, SystemExposure.SMALL, Automatable.YES): (_D, _S, _S, _S),
        (Exploitation.NONE, SystemExposure.CONTROLLED, Automatable.NO): (_D, _S, _S, _S),
        (Exploitation.NONE, SystemExposure.CONTROLLED, Automatable.YES): (_S, _S, _S, _S),
        (Exploitation.NONE, SystemExposure.OPEN, Automatable.NO): (_D, _S, _S, _S),
        (Exploitation.NONE, SystemExposure.OPEN, Automatable.YES): (_S, _S, _S, _O),
        (Exploitation.POC, SystemExposure.SMALL, Automatable.NO): (_D, _S, _S, _S),
        (Exploitation.POC, SystemExposure.SMALL, Automatable.YES): (_S, _S, _S, _S),
        (Exploitation.POC, SystemExposure.CONTROLLED, Automatable.NO): (_D, _S, _S, _S),
        (Exploitation.POC, SystemExposure.CONTROLLED, Automatable.YES): (_S, _S, _S, _O),
        (Exploitation.POC, SystemExposure.OPEN, Automatable.NO): (_S, _S, _S, _O),
        (Exploitation.POC, SystemExposure.OPEN, Automatable.YES): (_S, _S, _O, _O),
        (Exploitation.ACTIVE, SystemExposure.SMALL, Automatable.NO): (_S, _S, _O, _O),
        (Exploitation.ACTIVE, SystemExposure.SMALL, Automatable.YES): (_S, _O, _O, _O),
        (Exploitation.ACTIVE, SystemExposure.CONTROLLED, Automatable.NO): (_S, _S, _O, _O),
        (Exploitation.ACTIVE, SystemExposure.CONTROLLED, Automatable.YES): (_O, _O, _O, _O),
        (Exploitation.ACTIVE, SystemExposure.OPEN, Automatable.NO): (_S, _O, _O, _I),
        (Exploitation.ACTIVE, SystemExposure.OPEN, Automatable.YES): (_O, _O, _I, _I),
    }
    return {
        (*key, impact): outcome
        for key, outcomes in rows.items()
        for impact, outcome in zip(HumanImpact, outcomes, strict=True)
    }


SSVC_DEPLOYER_TABLE: Final[
    Mapping[tuple[Exploitation, SystemExposure, Automatable, HumanImpact], DeployerPriority]
] = _deployer_table()
"""The CERT/CC SSVC deployer patch-application-priority table (72 rows)."""

DEPLOYER_TO_OUTCOME: Final[Mapping[DeployerPriority, SSVCOutcome]] = {
    DeployerPriority.DEFER: SSVCOutcome.TRACK,
    DeployerPriority.SCHEDULED: SSVCOutcome.TRACK_STAR,
    DeployerPriority.OUT_OF_CYCLE: SSVCOutcome.ATTEND,
    DeployerPriority.IMMEDIATE: SSVCOutcome.ACT,
}
"""Deployer priority -> patchpilot's SSVC outcome (the CISA names used by the SLA policy)."""

_OUTCOME_RANK: Final[Mapping[SSVCOutcome, int]] = {
    SSVCOutcome.TRACK: 0,
    SSVCOutcome.TRACK_STAR: 1,
    SSVCOutcome.ATTEND: 2,
    SSVCOutcome.ACT: 3,
}

_SYSTEM_EXPOSURE: Final[Mapping[Exposure, SystemExposure]] = {
    Exposure.INTERNET: SystemExposure.OPEN,
    Exposure.INTERNAL: SystemExposure.CONTROLLED,
    Exposure.ISOLATED: SystemExposure.SMALL,
}


@dataclass(frozen=True, slots=True)
class SSVCInputs:
    """The four deployer decision points, with which ones were assumed for lack of data."""

    exploitation: Exploitation
    exposure: SystemExposure
    automatable: Automatable
    human_impact: HumanImpact
    exploitation_assumed: bool = False
    automatable_assumed: bool = False


def ssvc_deployer(inputs: SSVCInputs) -> DeployerPriority:
    """Look the inputs up in :data:`SSVC_DEPLOYER_TABLE`."""
    key = (inputs.exploitation, inputs.exposure, inputs.automatable, inputs.human_impact)
    return SSVC_DEPLOYER_TABLE[key]


# --------------------------------------------------------------------------- evidence


@dataclass(frozen=True, slots=True)
class _Evidence:
    """Worst-case enrichment over the finding's CVEs."""

    cvss: CVSS | None
    epss: float | None
    kev: KEVEntry | None
    vectors: tuple[str, ...]


def _merge_kev(listed: Sequence[KEVEntry]) -> KEVEntry | None:
    """One KEV view of several CVEs: earliest dateAdded, earliest dueDate, any ransomware."""
    if not listed:
        return None
    uses = [k.known_ransomware_use for k in listed]
    ransomware = True if any(uses) else (None if None in uses else False)
    return KEVEntry(
        date_added=min(k.date_added for k in listed),
        due_date=min(k.due_date for k in listed),
        known_ransomware_use=ransomware,
    )


def _evidence(enrichments: Sequence[Enrichment]) -> _Evidence:
    cvss: CVSS | None = None
    epss: float | None = None
    listed: list[KEVEntry] = []
    vectors: list[str] = []
    for item in sorted(enrichments, key=lambda e: e.cve):
        best = item.best_cvss
        if best is not None:
            vectors.append(best.vector)
            if cvss is None or best.base_score > cvss.base_score:
                cvss = best
        if item.epss is not None and (epss is None or item.epss.probability > epss):
            epss = item.epss.probability
        if item.kev is not None:
            listed.append(item.kev)
    return _Evidence(cvss, epss, _merge_kev(listed), tuple(vectors))


def _vector_metrics(vector: str) -> dict[str, str]:
    metrics: dict[str, str] = {}
    for part in vector.split("/"):
        key, sep, value = part.partition(":")
        if sep and key != "CVSS":
            metrics[key] = value
    return metrics


def _cvss_band(score: float) -> Severity:
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    if score > 0.0:
        return Severity.LOW
    return Severity.UNIMPORTANT


def _effective_severity(severity: Severity, evidence: _Evidence) -> Severity:
    if evidence.cvss is not None:
        return _cvss_band(evidence.cvss.base_score)
    return severity


def ssvc_inputs(
    finding: Finding,
    enrichments: Sequence[Enrichment],
    host: Host,
    policy: Policy,
) -> SSVCInputs:
    """Derive the deployer decision points from the data (see the module docstring)."""
    evidence = _evidence(enrichments)
    return _ssvc_inputs(
        _exploitability(evidence, policy), _effective_severity(finding.severity, evidence), host
    )


@dataclass(frozen=True, slots=True)
class _Exploitability:
    """The SSVC decision points that depend only on the evidence (and the policy)."""

    exploitation: Exploitation
    exploitation_assumed: bool
    automatable: Automatable
    automatable_assumed: bool


def _exploitability(evidence: _Evidence, policy: Policy) -> _Exploitability:
    metrics = [_vector_metrics(v) for v in evidence.vectors]
    exploitation_assumed = False
    if evidence.kev is not None or any(m.get("E") == "A" for m in metrics):
        exploitation = Exploitation.ACTIVE
    elif (evidence.epss is not None and evidence.epss >= policy.risk.epss_likely) or any(
        m.get("E") == "P" for m in metrics
    ):
        exploitation = Exploitation.POC
    elif evidence.epss is not None:
        exploitation = Exploitation.NONE
    else:
        exploitation, exploitation_assumed = Exploitation.POC, True
    automatable_assumed = not metrics
    automatable = (
        Automatable.YES
        if automatable_assumed
        or any(m.get("AV") == "N" and m.get("PR") == "N" and m.get("UI") == "N" for m in metrics)
        else Automatable.NO
    )
    return _Exploitability(exploitation, exploitation_assumed, automatable, automatable_assumed)


def _ssvc_inputs(exploit: _Exploitability, severity: Severity, host: Host) -> SSVCInputs:
    severe = severity in (Severity.HIGH, Severity.CRITICAL)
    if host.criticality == 5 and severe:
        impact = HumanImpact.VERY_HIGH
    elif host.criticality >= 4 or severe:
        impact = HumanImpact.HIGH
    elif host.criticality == 3 or severity in (Severity.MEDIUM, Severity.UNKNOWN):
        impact = HumanImpact.MEDIUM
    else:
        impact = HumanImpact.LOW
    return SSVCInputs(
        exploitation=exploit.exploitation,
        exposure=_SYSTEM_EXPOSURE[host.exposure],
        automatable=exploit.automatable,
        human_impact=impact,
        exploitation_assumed=exploit.exploitation_assumed,
        automatable_assumed=exploit.automatable_assumed,
    )


# --------------------------------------------------------------------------- host signals


class Reach(StrEnum):
    """How reachable a finding's code is on its host (best level found)."""

    NETWORK = "network"
    """Loaded by a process listening on a routable (non-loopback) address."""
    LOCAL = "local"
    """Loaded by processes listening on loopback only."""
    RUNNING = "running"
    """Loaded by a running process that listens on nothing."""
    IDLE = "idle"
    """Loaded by no running process."""


class RestartNeed(StrEnum):
    """What applying the fix takes beyond installing it (operational cost)."""

    NONE = "none"
    RESTART = "restart"
    REBOOT = "reboot"


class Listener(BaseModel):
    """A listening socket of a process that loads the finding's code (host text: untrusted)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    process: str | None = Field(description="the process name (comm); None when not visible")
    address: str
    port: int = Field(ge=0, le=65535)


class FindingSignals(BaseModel):
    """What the host itself says about one finding (no feed needed). ``None`` = not known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    urgency: ChangelogUrgency | None = Field(
        default=None, description="highest changelog urgency= of the offered fix"
    )
    cve_count: int | None = Field(default=None, ge=0, description="CVEs the fix closes")
    reach: Reach | None = None
    listeners: tuple[Listener, ...] = Field(
        default=(), description="the listening sockets behind a network/local reach"
    )
    restart: RestartNeed | None = None
    restart_because: tuple[str, ...] = Field(
        default=(), description="the reboot source package, or the loaded binaries"
    )


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


@dataclass(frozen=True, slots=True)
class HostSignals:
    """One host's snapshot, indexed to give each of its findings its :class:`FindingSignals`.

    Build it with :meth:`of` from what discovery saved (facts, installed packages, pending
    updates), then call :meth:`for_finding` per finding.
    """

    binaries: Mapping[str, frozenset[str]]
    """source package -> its installed binary packages"""
    pending: Mapping[str, tuple[PendingUpdate, ...]]
    """source package -> its pending updates"""
    listeners: Mapping[str, tuple[Listener, ...]] | None
    """binary package -> listening sockets of processes loading it (None: not collected)"""
    running: frozenset[str] | None
    """binary packages any running process loads (None: not collected)"""

    @classmethod
    def of(
        cls,
        facts: HostFacts | None,
        packages: Sequence[InstalledPackage] = (),
        pending: Sequence[PendingUpdate] = (),
    ) -> HostSignals:
        """Index a host's facts, installed packages and pending updates."""
        source_of: dict[str, str] = {}
        binaries: dict[str, set[str]] = {}
        for package in packages:
            source_of.setdefault(package.name, package.source_name)
            binaries.setdefault(package.source_name, set()).add(package.name)
        by_source: dict[str, list[PendingUpdate]] = {}
        for update in pending:
            source = update.source_name or source_of.get(update.name, update.name)
            by_source.setdefault(source, []).append(update)
        loaded = facts.loaded_packages if facts is not None else None
        listeners: dict[str, list[Listener]] | None = None
        if loaded is not None and facts is not None and facts.listening is not None:
            listeners = {}
            sockets: dict[int, list[Listener]] = {}
            for socket in facts.listening:
                if socket.pid is not None:
                    sockets.setdefault(socket.pid, []).append(
                        Listener(process=socket.process, address=socket.address, port=socket.port)
                    )
            for process in loaded.listening:
                for name in process.packages:
                    listeners.setdefault(name, []).extend(sockets.get(process.pid, ()))
        return cls(
            binaries={k: frozenset(v) for k, v in binaries.items()},
            pending={k: tuple(v) for k, v in by_source.items()},
            listeners=None
            if listeners is None
            else {k: tuple(dict.fromkeys(v)) for k, v in listeners.items()},
            running=None if loaded is None else frozenset(loaded.running),
        )

    def for_finding(self, finding: Finding, policy: Policy) -> FindingSignals:
        """The finding's signals (see the module docstring for what each one means)."""
        source = finding.source_package
        names = self.binaries.get(source, frozenset()) | frozenset(
            b.partition(":")[0] for b in finding.binary_packages
        )
        offered = self.pending.get(source, ()) if finding.fix_reachable is True else ()
        urgency = max(
            (u.urgency for u in offered if u.urgency is not None),
            key=lambda u: u.rank,
            default=None,
        )
        cves = set(finding.cves)
        read = False
        for update in offered:
            if update.cves_from == "changelog":
                read = True
                cves.update(update.cves)
        cve_count = len(cves) if cves or read else None
        reach, listeners = self._reach(names)
        restart: RestartNeed | None = None
        because: tuple[str, ...] = ()
        if any(fnmatchcase(source, glob) for glob in policy.risk.reboot_sources):
            restart, because = RestartNeed.REBOOT, (source,)
            if reach is Reach.IDLE:  # the kernel, init, microcode: in use, mapped or not
                reach = Reach.RUNNING
        elif self.running is not None:
            loaded = tuple(sorted(names & self.running))
            restart = RestartNeed.RESTART if loaded else RestartNeed.NONE
            because = loaded
        return FindingSignals(
            urgency=urgency,
            cve_count=cve_count,
            reach=reach,
            listeners=listeners,
            restart=restart,
            restart_because=because,
        )

    def _reach(self, names: frozenset[str]) -> tuple[Reach | None, tuple[Listener, ...]]:
        if self.listeners is not None:
            found = [
                listener for name in sorted(names) for listener in self.listeners.get(name, ())
            ]
            ordered = tuple(sorted(set(found), key=lambda x: (x.port, x.address, x.process or "")))
            routable = tuple(x for x in ordered if not _is_loopback(x.address))
            if routable:
                return Reach.NETWORK, routable
            if ordered:
                return Reach.LOCAL, ordered
        if self.running is None:
            return None, ()
        return (Reach.RUNNING if names & self.running else Reach.IDLE), ()


def cve_count_value(count: int, saturation: int) -> float:
    """The ``cves`` factor: ``min(1, log2(1 + count) / log2(1 + saturation))``.

    >>> [round(cve_count_value(n, 15), 3) for n in (0, 1, 3, 7, 15, 40)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    return min(1.0, math.log2(1 + count) / math.log2(1 + saturation))


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True, slots=True)
class _Factor:
    name: str
    value: float | None  # None = unknown
    label: str


def _probability(value: float) -> str:
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.4f}"


def _finding_factors(
    severity: Severity,
    has_cves: bool,
    evidence: _Evidence,
    policy: Policy,
    kev_feed_loaded: bool,
    tracker: bool = False,
) -> tuple[_Factor, _Factor, _Factor]:
    """The severity, EPSS and KEV factors (``severity``: the finding's distro severity;
    ``tracker``: it is the Debian security tracker's urgency)."""
    if evidence.cvss is not None:
        severity_factor = _Factor(
            "severity", evidence.cvss.base_score / 10.0, f"CVSS {evidence.cvss.base_score:.1f}"
        )
    elif severity in SEVERITY_VALUES:
        source = "Debian tracker urgency" if tracker else "distro severity"
        severity_factor = _Factor(
            "severity", SEVERITY_VALUES[severity], f"{source} {severity.value}"
        )
    else:
        severity_factor = _Factor("severity", None, "severity unknown")
    if evidence.epss is not None:
        likely = evidence.epss >= policy.risk.epss_likely
        epss = _Factor(
            "epss",
            math.sqrt(evidence.epss),
            f"EPSS {_probability(evidence.epss)}" + (" (likely exploitation)" if likely else ""),
        )
    else:
        epss = _Factor("epss", None, "EPSS unknown")
    if evidence.kev is not None:
        kev = _Factor(
            "kev",
            1.0,
            f"in CISA KEV since {evidence.kev.date_added.isoformat()}, "
            f"due {evidence.kev.due_date.isoformat()}",
        )
    elif kev_feed_loaded and has_cves:
        kev = _Factor("kev", 0.0, "not in CISA KEV")
    else:
        kev = _Factor("kev", None, "KEV status unknown")
    return severity_factor, epss, kev


_EXPOSURE_LABELS: Final[Mapping[Exposure, str]] = {
    Exposure.INTERNET: "internet-facing",
    Exposure.INTERNAL: "internal",
    Exposure.ISOLATED: "isolated",
}


def _host_factors(host: Host, policy: Policy) -> tuple[_Factor, _Factor]:
    """The exposure and criticality factors."""
    exposure_label = _EXPOSURE_LABELS[host.exposure]
    return (
        _Factor("exposure", policy.risk.exposure[host.exposure], exposure_label),
        _Factor("criticality", (host.criticality - 1) / 4.0, f"criticality {host.criticality}/5"),
    )


def _listener_phrase(listeners: Sequence[Listener]) -> str:
    first = listeners[0]
    address = _safe(first.address)
    where = f"[{address}]:{first.port}" if ":" in first.address else f"{address}:{first.port}"
    others = len(listeners) - 1
    more = f" and {others} more listener{'s' if others > 1 else ''}" if others else ""
    process = _safe(first.process) if first.process else "a process"
    return f"{process} listening on {where}{more}"


def _signal_factors(
    signals: FindingSignals | None, policy: Policy
) -> tuple[_Factor, _Factor, _Factor]:
    """The urgency, cves and reachable factors (all unknown without signals)."""
    signals = signals or FindingSignals()
    if signals.urgency is not None:
        urgency = _Factor(
            "urgency",
            policy.risk.urgency[signals.urgency],
            f"changelog urgency {signals.urgency.value}",
        )
    else:
        urgency = _Factor("urgency", None, "changelog urgency unknown")
    if signals.cve_count is not None:
        n = signals.cve_count
        label = "no CVE named" if n == 0 else f"{n} CVE{'s' if n != 1 else ''} fixed"
        cves = _Factor("cves", cve_count_value(n, policy.risk.cve_count_saturation), label)
    else:
        cves = _Factor("cves", None, "CVE count unknown")
    levels = policy.risk.reachability
    reach = signals.reach
    if reach is Reach.NETWORK and signals.listeners:
        reachable = _Factor(
            "reachable", levels.network, f"loaded by {_listener_phrase(signals.listeners)}"
        )
    elif reach in (Reach.NETWORK, Reach.LOCAL) and signals.listeners:
        reachable = _Factor(
            "reachable",
            levels.local,
            f"loaded by {_listener_phrase(signals.listeners)} (loopback only)",
        )
    elif reach in (Reach.NETWORK, Reach.LOCAL, Reach.RUNNING):
        label = (
            "in use by the running system"
            if signals.restart is RestartNeed.REBOOT
            else "loaded by a running process that listens on nothing"
        )
        reachable = _Factor("reachable", levels.running, label)
    elif reach is Reach.IDLE:
        reachable = _Factor("reachable", levels.idle, "loaded by no running process")
    else:
        reachable = _Factor("reachable", None, "reachability unknown")
    return urgency, cves, reachable


def _restart_cost(signals: FindingSignals | None, policy: Policy) -> tuple[str, float] | None:
    """The operational-cost label and the points it takes off (None: unknown)."""
    if signals is None or signals.restart is None:
        return None
    because = ", ".join(_safe(b) for b in signals.restart_because[:3])
    if len(signals.restart_because) > 3:
        because += f" +{len(signals.restart_because) - 3} more"
    cost = policy.risk.operational_cost
    if signals.restart is RestartNeed.REBOOT:
        return f"reboot needed to apply ({because})", cost.reboot
    if signals.restart is RestartNeed.RESTART:
        return f"restart of running processes needed ({because} loaded)", cost.restart
    return "no restart needed", 0.0


def _baselines(policy: Policy) -> dict[str, float]:
    """The factor values of the baseline finding (see the module docstring)."""
    return {
        "severity": SEVERITY_VALUES[Severity.MEDIUM],
        "epss": math.sqrt(policy.risk.epss_likely),
        "kev": 0.0,
        "exposure": policy.risk.exposure[Exposure.INTERNAL],
        "criticality": 0.5,
        "urgency": policy.risk.urgency[ChangelogUrgency.MEDIUM],
        "cves": cve_count_value(1, policy.risk.cve_count_saturation),
        "reachable": policy.risk.reachability.idle,
    }


def _pulls(
    factors: Sequence[_Factor], weights: Mapping[str, float], baselines: Mapping[str, float]
) -> list[tuple[str, float]]:
    """(label, points) by which each known factor moves the score from the baseline's."""
    known_weight = sum(weights[f.name] for f in factors if f.value is not None)
    if known_weight <= 0:
        return []
    return [
        (f.label, 100.0 * weights[f.name] * (f.value - baselines[f.name]) / known_weight)
        for f in factors
        if f.value is not None and weights[f.name] > 0
    ]


def _deciding(pulls: Sequence[tuple[str, float]]) -> tuple[str, str | None]:
    """The deciding factor's phrase and label: the largest pull in the direction of the total
    pull (None: the finding scores as the baseline)."""
    total = sum(points for _, points in pulls)
    if abs(total) < 0.05:
        return "deciding factor: none (scores as the baseline finding)", None
    sign = 1.0 if total > 0 else -1.0
    label, points = max(pulls, key=lambda p: sign * p[1])
    return f"deciding factor: {label} ({points:+.1f} vs baseline)", label


def _score(
    factors: Sequence[_Factor], weights: Mapping[str, float]
) -> tuple[float, list[RiskFactor], bool]:
    known_weight = sum(weights[f.name] for f in factors if f.value is not None)
    determined = known_weight > 0
    risk_factors: list[RiskFactor] = []
    total = 0.0
    for factor in factors:
        weight = weights[factor.name]
        contribution = 0.0
        if factor.value is not None and determined:
            contribution = 100.0 * weight * factor.value / known_weight
            total += contribution
        risk_factors.append(
            _risk_factor(
                factor.name,
                _factor_value(factor),
                factor.value is not None,
                weight,
                round(contribution, 4),
            )
        )
    score = total if determined else _UNDETERMINED_SCORE
    return min(100.0, max(0.0, score)), risk_factors, determined


_RISK_FACTORS: dict[tuple[str, str, bool, float, float], RiskFactor] = {}


def _risk_factor(
    name: str, value: str, known: bool, weight: float, contribution: float
) -> RiskFactor:
    """``RiskFactor(...)``, one shared (immutable) instance per distinct set of values.

    Weights are never negative and a contribution is negative only for the operational cost
    (never ``-0.0``: no cost is ``0.0``), so equal keys are identical inputs and validate to
    identical factors.
    """
    key = (name, value, known, weight, contribution)
    factor = _RISK_FACTORS.get(key)
    if factor is None:
        factor = RiskFactor(
            name=name, value=value, known=known, weight=weight, contribution=contribution
        )
        if len(_RISK_FACTORS) >= _MAX_RISK_FACTORS:
            _RISK_FACTORS.clear()
        _RISK_FACTORS[key] = factor
    return factor


_MAX_RISK_FACTORS: Final = 65_536


def _factor_value(factor: _Factor) -> str:
    if factor.value is None:
        return "unknown"
    return f"{factor.label} -> {factor.value:.3f}"


# --------------------------------------------------------------------------- due date


def _first_seen_date(first_seen: datetime) -> date:
    if first_seen.tzinfo is not None:
        return first_seen.astimezone(UTC).date()
    return first_seen.date()


_FIRST_SEEN_DATES: dict[datetime, date] = {}


def _first_seen_day(first_seen: datetime) -> date:
    """:func:`_first_seen_date`, memoised (equal datetimes are the same instant, or the same
    wall time when naive, so they have the same date; naive never equals aware)."""
    day = _FIRST_SEEN_DATES.get(first_seen)
    if day is None:
        day = _first_seen_date(first_seen)
        if len(_FIRST_SEEN_DATES) >= _MAX_DATED:
            _FIRST_SEEN_DATES.clear()
        _FIRST_SEEN_DATES[first_seen] = day
    return day


def _sla_days(severity: Severity, outcome: SSVCOutcome, policy: Policy) -> int | None:
    """The stricter (smaller) of the severity and SSVC SLAs; None when neither has one."""
    days = [
        d
        for d in (
            policy.sla_days.days_for_severity(severity),
            policy.sla_days.days_for_ssvc(outcome),
        )
        if d is not None
    ]
    return min(days) if days else None


def _due_date(
    first_seen: date, days: int | None, kev: KEVEntry | None, policy: Policy
) -> date | None:
    due = first_seen + timedelta(days=days) if days is not None else None
    if kev is not None and policy.kev.due_date_is_hard_bound:
        due = kev.due_date if due is None else min(due, kev.due_date)
    return due


# --------------------------------------------------------------------------- rationale


def _safe(text: str) -> str:
    return text if _SAFE_TEXT_RE.match(text) else "(withheld: unexpected characters)"


def _fix_phrase(fix: FixState, fix_reachable: bool | None) -> str:
    status = fix.status
    if status is FixStatus.FIXED:
        phrase = f"fixed in {_safe(fix.version or '')}"
        if fix_reachable is False:
            phrase += " (not yet offered by the host's repositories)"
        elif fix_reachable is None:
            phrase += " (repository availability unknown)"
        return phrase
    if status is FixStatus.HELD:
        return f"fixed in {_safe(fix.version or '')}, but the package is held on the host"
    return {
        FixStatus.NO_FIX_YET: "no fix available yet",
        FixStatus.DEFERRED: "no fix: deferred by the distribution",
        FixStatus.WILL_NOT_FIX: "no fix: the distribution will not fix it",
        FixStatus.END_OF_LIFE: "no fix: release or package is end-of-life",
        FixStatus.NOT_AFFECTED: "not affected according to the distribution",
        FixStatus.UNIMPORTANT: "rated unimportant by the distribution",
    }[status]


def _ssvc_phrase(outcome: SSVCOutcome, inputs: SSVCInputs, kev_raised: bool) -> str:
    exploitation = inputs.exploitation.value + (" assumed" if inputs.exploitation_assumed else "")
    automatable = (
        "automatable" if inputs.automatable is Automatable.YES else "not automatable"
    ) + (" assumed" if inputs.automatable_assumed else "")
    phrase = (
        f"SSVC {outcome.value} (exploitation {exploitation}, exposure {inputs.exposure.value}, "
        f"{automatable}, human impact {inputs.human_impact.value}"
    )
    return phrase + (", raised for KEV)" if kev_raised else ")")


_UNKNOWN_NAMES: Final[Mapping[str, str]] = {
    "epss": "EPSS",
    "urgency": "changelog urgency",
    "cves": "CVE count",
    "reachable": "reachability",
}


def _rationale_parts(
    *,
    factors: Sequence[_Factor],
    evidence: _Evidence,
    fix_phrase: str,
    outcome: SSVCOutcome,
    inputs: SSVCInputs,
    kev_raised: bool,
    determined: bool,
    deciding: tuple[str, str | None] | None = None,
    restart: str | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The rationale's parts before and after the due-date part (the deciding factor first,
    then the other known factors)."""
    head = [deciding[0]] if deciding else []
    named = deciding[1] if deciding else None
    head += [f.label for f in factors if f.value is not None and f.label != named]
    ransomware = evidence.kev is not None and evidence.kev.known_ransomware_use
    if ransomware and named != "known ransomware use":
        head.append("known ransomware use")
    if restart is not None and restart != named:
        head.append(restart)
    head.append(fix_phrase)
    head.append(_ssvc_phrase(outcome, inputs, kev_raised))
    tail: list[str] = []
    unknown = [_UNKNOWN_NAMES.get(f.name, f.name) for f in factors if f.value is None]
    if restart is None:
        unknown.append("restart need")
    if unknown and determined:
        tail.append(f"unknown: {', '.join(unknown)} (scored on the known factors only)")
    elif not determined:
        tail.append(f"score undetermined: no weighted factor is known ({', '.join(unknown)})")
    return tuple(head), tuple(tail)


def _due_phrase(due: date | None, today: date | None) -> str:
    if due is None:
        return "no SLA deadline"
    overdue = today is not None and today > due
    return f"due {due.isoformat()}" + (" (overdue)" if overdue else "")


# --------------------------------------------------------------------------- memo
#
# A fleet has few distinct (advisory evidence, host profile) combinations and many findings,
# so ``prioritize`` computes each stage once and reuses it:
#
# * ``_Part``: what depends on the finding's enrichment, severity, CVE presence, fix state and
#   reachability, the policy and ``kev_feed_loaded`` (keyed on the *identity* of the policy and
#   of the enrichment records, which the part holds so identities stay valid; both are frozen
#   models);
# * ``_Scored``: plus the host's exposure and criticality and the finding's host signals
#   (:class:`FindingSignals`, frozen and hashable): score, factors, SSVC, rationale;
# * the validated assessment fields: plus the first-seen date and ``today``.
#
# Every stage is computed by the same functions as before, and the first assessment of each
# combination is validated in full; later ones only get their own finding key.


@dataclass(frozen=True, slots=True)
class _Scored:
    score: float  # rounded as stored
    log_score: float
    factors: tuple[RiskFactor, ...]
    outcome: SSVCOutcome
    days: int | None
    head: tuple[str, ...]
    tail: tuple[str, ...]
    # (first-seen date, today) -> validated (score, factors, ssvc, due_date, rationale)
    dated: dict[tuple[date, date | None], tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Part:
    policy: Policy  # held: keys use its id
    enrichments: tuple[Enrichment, ...]  # held: keys use their ids
    evidence: _Evidence
    severity: Severity  # effective severity (CVSS band, else distro severity)
    factors: tuple[_Factor, _Factor, _Factor]
    exploit: _Exploitability
    fix_phrase: str
    weights: Mapping[str, float]
    baselines: Mapping[str, float]
    hosts: dict[tuple[Any, ...], _Scored] = field(default_factory=dict)


_PartKey: TypeAlias = tuple[Any, ...]
_PARTS: dict[_PartKey, _Part] = {}
_MAX_PARTS: Final = 100_000
_MAX_DATED: Final = 4096
_RISK_FIELDS: Final = frozenset(RiskAssessment.model_fields)
_new_model: Final = object.__new__
_set_attr: Final = object.__setattr__


def _part(
    finding: Finding,
    enrichments: tuple[Enrichment, ...],
    policy: Policy,
    kev_feed_loaded: bool,
) -> _Part:
    evidence = _evidence(enrichments)
    return _Part(
        policy=policy,
        enrichments=enrichments,
        evidence=evidence,
        severity=_effective_severity(finding.severity, evidence),
        factors=_finding_factors(
            finding.severity,
            bool(finding.cves),
            evidence,
            policy,
            kev_feed_loaded,
            tracker=_from_tracker(finding),
        ),
        exploit=_exploitability(evidence, policy),
        fix_phrase=_fix_phrase(finding.fix, finding.fix_reachable),
        weights=policy.risk.weights.normalised(),
        baselines=_baselines(policy),
    )


def _from_tracker(finding: Finding) -> bool:
    """Whether the finding's severity is the Debian security tracker's urgency."""
    return any(p.feed == "debian-json" for p in finding.provenance)


def _scored(part: _Part, host: Host, signals: FindingSignals | None) -> _Scored:
    policy, evidence = part.policy, part.evidence
    factors = [*part.factors, *_host_factors(host, policy), *_signal_factors(signals, policy)]
    score, risk_factors, determined = _score(factors, part.weights)
    pulls = _pulls(factors, part.weights, part.baselines) if determined else []
    if evidence.kev is not None and evidence.kev.known_ransomware_use:
        bonus = min(policy.kev.ransomware_bonus, 100.0 - score)
        score = min(100.0, score + policy.kev.ransomware_bonus)
        risk_factors.append(
            _risk_factor(
                "ransomware", "known ransomware use (CISA KEV)", True, 0.0, round(bonus, 4)
            )
        )
        pulls.append(("known ransomware use", bonus))
    cost = _restart_cost(signals, policy)
    if cost is None:
        risk_factors.append(_risk_factor("restart", "unknown", False, 0.0, 0.0))
    else:
        label, points = cost
        taken = min(points, score) if determined else 0.0
        score -= taken
        risk_factors.append(
            _risk_factor("restart", f"{label} -> -{taken:g} points", True, 0.0, -taken or 0.0)
        )
        if taken:
            pulls.append((label, -taken))
    inputs = _ssvc_inputs(part.exploit, part.severity, host)
    outcome = DEPLOYER_TO_OUTCOME[ssvc_deployer(inputs)]
    kev_raised = False
    if evidence.kev is not None and _OUTCOME_RANK[outcome] < _OUTCOME_RANK[policy.kev.minimum_ssvc]:
        outcome, kev_raised = policy.kev.minimum_ssvc, True
    head, tail = _rationale_parts(
        factors=factors,
        evidence=evidence,
        fix_phrase=part.fix_phrase,
        outcome=outcome,
        inputs=inputs,
        kev_raised=kev_raised,
        determined=determined,
        deciding=_deciding(pulls) if determined else None,
        restart=None if cost is None else cost[0],
    )
    return _Scored(
        score=round(score, 4),
        log_score=round(score, 2),
        factors=tuple(risk_factors),
        outcome=outcome,
        days=_sla_days(part.severity, outcome, policy),
        head=head,
        tail=tail,
    )


# --------------------------------------------------------------------------- entry point


def prioritize(
    finding: Finding,
    enrichment: Enrichment | Sequence[Enrichment] | None,
    host: Host,
    policy: Policy,
    *,
    today: date | None = None,
    kev_feed_loaded: bool = False,
    signals: FindingSignals | None = None,
) -> RiskAssessment:
    """Score one finding, decide its SSVC outcome and its due date.

    Args:
        finding: the finding (fixed or not: a finding without a fix still carries risk; the
            rationale says there is no fix).
        enrichment: CVSS/EPSS/KEV data of the finding's CVE, or of each of its CVEs (the worst
            value of each factor counts), or ``None``.
        host: the inventory host (criticality, exposure).
        policy: weights, SLAs and KEV handling.
        today: when given, a due date before it is marked "(overdue)" in the rationale.
        kev_feed_loaded: whether the CISA KEV catalog has been imported; without it "not in
            KEV" cannot be told from "unknown", so KEV is an unknown factor.
        signals: what the host says about the finding (:meth:`HostSignals.for_finding`):
            changelog urgency, CVE count, reachability, restart need. ``None``: all unknown.

    Returns:
        The :class:`RiskAssessment` (key ``"<host>|<source>|<advisory>"``).
    """
    if enrichment is None:
        enrichments: tuple[Enrichment, ...] = ()
    elif isinstance(enrichment, Enrichment):
        enrichments = (enrichment,)
    else:
        enrichments = tuple(enrichment)
    fix = finding.fix
    part_key = (
        id(policy),
        bool(kev_feed_loaded),
        tuple(map(id, enrichments)),
        finding.severity,
        bool(finding.cves),
        fix.status,
        fix.version,
        finding.fix_reachable,
        _from_tracker(finding),
    )
    part = _PARTS.get(part_key)
    if part is None:
        part = _part(finding, enrichments, policy, kev_feed_loaded)
        if len(_PARTS) >= _MAX_PARTS:
            _PARTS.clear()
        _PARTS[part_key] = part
    host_key = (host.exposure, host.criticality, type(host.criticality), signals)
    scored = part.hosts.get(host_key)
    if scored is None:
        scored = part.hosts[host_key] = _scored(part, host, signals)
    key = finding_key(finding)
    dated_key = (_first_seen_day(finding.first_seen), today)
    values = scored.dated.get(dated_key)
    if values is None:
        due = _due_date(dated_key[0], scored.days, part.evidence.kev, policy)
        assessment = RiskAssessment(
            finding_key=key,
            score=scored.score,
            factors=scored.factors,
            ssvc=scored.outcome,
            due_date=due,
            rationale="; ".join((*scored.head, _due_phrase(due, today), *scored.tail)) + ".",
        )
        if len(scored.dated) >= _MAX_DATED:
            scored.dated.clear()
        scored.dated[dated_key] = (
            assessment.score,
            assessment.factors,
            assessment.ssvc,
            assessment.due_date,
            assessment.rationale,
        )
    else:
        assessment = _new_assessment(key, values)
    if debug_enabled():
        log.debug(
            "prioritization.scored", finding=key, score=scored.log_score, ssvc=scored.outcome.value
        )
    return assessment


def _new_assessment(key: str, values: tuple[Any, ...]) -> RiskAssessment:
    """``RiskAssessment(finding_key=key, ...)`` from the validated fields of an equal one."""
    score, factors, ssvc, due_date, rationale = values
    assessment = _new_model(RiskAssessment)
    _set_attr(
        assessment,
        "__dict__",
        {
            "finding_key": key,
            "score": score,
            "factors": factors,
            "ssvc": ssvc,
            "due_date": due_date,
            "rationale": rationale,
        },
    )
    _set_attr(assessment, "__pydantic_fields_set__", set(_RISK_FIELDS))
    _set_attr(assessment, "__pydantic_extra__", None)
    _set_attr(assessment, "__pydantic_private__", None)
    return assessment


# --------------------------------------------------------------------------- assistance


class PriorityRaise(BaseModel):
    """One proposal of the ``prioritization`` prompt."""

    model_config = ConfigDict(extra="forbid")

    finding_id: str
    raise_by: float = Field(description="points to add (0 = none)")
    reason: str = Field(max_length=400)
    cited: list[str] = Field(max_length=10)


class PriorityAdvice(BaseModel):
    """What the ``prioritization`` prompt returns."""

    model_config = ConfigDict(extra="forbid")

    items: list[PriorityRaise]


def assist_priorities(
    assessments: Sequence[RiskAssessment],
    packages: Mapping[str, str],
    policy: Policy,
    *,
    memory: Any = None,
    client: Any = None,
    top: int = 10,
) -> tuple[list[RiskAssessment], dict[str, Any]]:
    """Cite past incidents in the top findings' rationales; let an LLM raise scores, bounded.

    Args:
        assessments: the core's assessments.
        packages: finding key -> source package (for memory recall).
        policy: ``risk.llm_max_raise`` bounds a raise.
        memory: a :class:`patchpilot.tools.memory.VectorMemory` (None: no recall).
        client: an LLM client (None: no LLM).
        top: how many of the highest-scored findings are considered.

    Returns:
        The assessments (changed ones replaced) and how the step went (for the run record).
        A raise is applied only to a finding of the top set, clamped to ``[0, llm_max_raise]``
        and to 100; scores are never lowered and due dates never change.
    """
    ranked = sorted(assessments, key=lambda a: -a.score)[:top]
    by_key = {a.finding_key: a for a in assessments}
    recalled: dict[str, list[dict[str, Any]]] = {}
    if memory is not None:
        for package in sorted(
            {packages[a.finding_key] for a in ranked if a.finding_key in packages}
        ):
            try:
                items = memory.recall(
                    f"{package} incident failure rollback", kinds=("incidents",), k=3
                )
            except Exception as exc:  # advisory only
                log.warning("prioritization.memory_unavailable", error=str(exc))
                break
            same = [i for i in items if i.metadata.get("package") == package]
            if same:
                recalled[package] = [{"id": i.id, "text": i.text} for i in same]
    changed: dict[str, RiskAssessment] = {}
    for a in ranked:
        past = recalled.get(packages.get(a.finding_key, ""), [])
        if past:
            cites = "; ".join(f"[{p['id']}] {p['text']}" for p in past[:2])
            changed[a.finding_key] = a.model_copy(
                update={"rationale": f"{a.rationale} Past incidents: {cites}"}
            )
    how: dict[str, Any] = {"by": "core", "recalled": sum(len(v) for v in recalled.values())}
    if client is None:
        how["reason"] = "no LLM configured"
    else:
        from patchpilot.prompts import as_json, fence, load_prompt
        from patchpilot.tools.llm import LLMFallback, try_complete

        prompt = load_prompt("prioritization")
        findings = [
            {
                "finding_id": a.finding_key,
                "package": packages.get(a.finding_key),
                "score": a.score,
                "ssvc": a.ssvc.value,
                "due": str(a.due_date) if a.due_date else None,
                "rationale": a.rationale,
            }
            for a in ranked
        ]
        messages = prompt.messages(
            findings=fence("findings", as_json(findings)),
            memory=fence("past incidents", as_json(recalled)),
            max_raise=str(policy.risk.llm_max_raise),
        )
        result = try_complete(client, "prioritization", prompt.version, messages, PriorityAdvice)
        if isinstance(result, LLMFallback):
            how["reason"] = result.reason
        else:
            allowed = {a.finding_key for a in ranked}
            cited_ok = {p["id"] for v in recalled.values() for p in v}
            dropped: list[str] = []
            for item in result.value.items:
                if item.finding_id not in allowed:
                    dropped.append(f"{item.finding_id[:40]} is not a top finding")
                    continue
                if item.raise_by < 0:
                    dropped.append(f"{item.finding_id[:40]}: may not lower a score")
                    continue
                base = changed.get(item.finding_id, by_key[item.finding_id])
                bump = min(item.raise_by, policy.risk.llm_max_raise)
                cited_ids = [c for c in item.cited if c in cited_ok]
                note = f" LLM (+{bump:g}): {item.reason.strip()}"
                if cited_ids:
                    note += f" [{', '.join(cited_ids)}]"
                changed[item.finding_id] = base.model_copy(
                    update={
                        "score": round(min(100.0, base.score + bump), 1),
                        "rationale": base.rationale + note,
                    }
                )
            how.update(
                by="llm",
                model=result.model,
                prompt=f"prioritization v{prompt.version}",
                tokens=result.usage.total_tokens,
                cached=result.cached,
            )
            if dropped:
                how["dropped"] = dropped
    return [changed.get(a.finding_key, a) for a in assessments], how
