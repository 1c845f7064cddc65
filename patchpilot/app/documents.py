"""The documents patchpilot publishes, as pydantic models, and their JSON Schema.

- :class:`ReportDocument`: ``patchpilot.report/v1``, what ``scan``, ``findings`` and ``report``
  print with ``--format json`` (built by :func:`patchpilot.app.report.report_document`; the
  report of a patch run adds ``status``, ``reason``, ``plan``, ``approval``, ``rings``,
  ``deployments``, ``unreachable`` and ``compliance`` on every host).
- :class:`RunDocument`: ``patchpilot.run/v1``, what ``run``, ``approve``, ``reject`` and
  ``resume`` print (built by :func:`patchpilot.graphs.run_document.run_document`).
- :class:`AcceptancesDocument`: ``patchpilot.acceptances/v1``, what ``accept --list
  --format json`` prints (built by :func:`patchpilot.app.acceptances.acceptances_document`).
- :class:`ComplianceDocument`: ``patchpilot.compliance/v1``, what ``compliance --format json``
  prints and ``GET /api/v1/compliance`` returns (built by
  :func:`patchpilot.app.compliance.compliance_document`).

The models describe the documents exactly as the README's contracts do: every documented field,
and extra fields only where the document has open-ended content today (a run's ``params`` and
``summary``, the LLM's assistance records and judgments). Their JSON Schema is committed under
``schemas/`` (one file per schema); a unit test checks that the committed files equal the
schema generated here and that the documents the code emits validate against them. After
changing a model, regenerate the files::

    .venv/bin/python -m patchpilot.app.documents --write-schemas
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.agents.analysis import SeriesSummary
from patchpilot.core.feeds import FeedStatus
from patchpilot.core.models import DeletedLibraryUse, ListeningSocket, Provenance, RiskFactor
from patchpilot.core.schedule import WindowSlot
from patchpilot.core.schedules import Trigger
from patchpilot.core.store import RunRecord
from patchpilot.core.store.stages import Stage

__all__ = [
    "DOCUMENTS",
    "SCHEMA_DIR",
    "AcceptancesDocument",
    "ComplianceDocument",
    "ReportDocument",
    "RunDocument",
    "json_schema",
    "schema_file",
    "validate_compliance",
    "validate_report",
    "validate_run",
    "write_schemas",
]

SCHEMA_DIR: Final = Path(__file__).resolve().parents[2] / "schemas"
"""``schemas/`` at the top of the repository (a source checkout)."""

RunStatus = Literal[
    "completed", "partial", "awaiting_approval", "halted", "failed", "rejected", "cancelled"
]
HostStatus = Literal["ok", "unreachable", "failed"]
DeploymentStatus = Literal["installed", "failed", "rolled_back", "skipped", "pending"]


class _Part(BaseModel):
    """A part of a document: exactly its documented fields."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- the scan report


class DataQualityEntry(_Part):
    """A version no ordering applies to, met while matching: its record was not assessed."""

    source: str = Field(
        description="the advisory's feed (a fixed version) or 'host' (an installed version)"
    )
    record: str = Field(description="the advisory whose verdict could not be reached")
    package: str = Field(description="the source package")
    version: str = Field(description="the offending version (control characters escaped)")
    problem: str = Field(description="why it cannot be ordered")
    hosts: list[str] = Field(description="the hosts it was met on")


class ReportData(_Part):
    """Where the findings came from: the mode, the feeds and their freshness."""

    mode: Literal["advisories", "repository-metadata"] | None
    feeds: list[FeedStatus]
    stale_feeds: list[str]
    hint: str | None
    data_quality: list[DataQualityEntry] = Field(
        description="versions no ordering applies to (empty, control characters, over-long, a "
        "dpkg syntax error): those records were not assessed; see README 'Version ordering'"
    )


class OsRelease(_Part):
    """The host's OS release, as identified."""

    id: str
    version_id: str | None
    codename: str | None
    family: str


class AptSource(_Part):
    """One configured package source."""

    uri: str
    dist: str
    component: str | None
    kind: str


class PendingUpdateJson(_Part):
    """One pending update of a host."""

    package: str
    arch: str | None
    source_package: str | None
    installed: str | None
    candidate: str
    origin: Literal["security", "point-release", "third-party", "local", "unknown"]
    origins: list[str]
    security: bool
    cves: list[str]
    cves_from: str | None
    held: bool = Field(
        default=False,
        description="the host holds the package: apt offers the candidate but never installs it",
    )
    urgency: Literal["low", "medium", "high", "emergency", "critical"] | None = Field(
        default=None,
        description="the highest changelog urgency= between installed and candidate (null: "
        "changelog not read, or no entry states one)",
    )


class ReportHost(_Part):
    """One host of a report: discovery status, facts (``null`` when not reached), updates."""

    name: str
    status: HostStatus
    error: str | None
    host: str
    ok: bool
    error_type: str | None
    message: str | None
    warnings: list[str]
    package_count: int | None
    os: str | None
    os_release: OsRelease | None
    kernel: str | None
    reboot_required: bool | None
    reboot_required_pkgs: list[str] | None
    held_packages: list[str] | None
    needs_restart: list[DeletedLibraryUse] | None
    services_needing_restart: list[str] | None
    listening: list[ListeningSocket] | None
    apt_sources: list[AptSource] | None
    pending_updates: list[PendingUpdateJson]
    compliance: str | None = Field(
        default=None, description="only in the report of a patch run: the host's compliance"
    )


class Risk(_Part):
    """A finding's risk: score, SSVC decision, due date, and why."""

    score: float
    ssvc: str
    due: str | None
    rationale: str
    factors: list[RiskFactor]


class Accepted(_Part):
    """A risk acceptance: which id, on which hosts, who accepted it, why, until when."""

    id: str = Field(description="the advisory or CVE id accepted")
    host: str = Field(description="the host pattern (the --limit language, on host names)")
    by: str
    reason: str
    until: str = Field(description="the last day (UTC, YYYY-MM-DD) the acceptance holds")
    created: datetime | None


class Finding(_Part):
    """One finding: a package of a host exposed to an advisory."""

    host: str
    package: str
    packages: list[str]
    source_package: str
    purl: str | None = Field(
        description="package URL of the source package on the host's release, e.g. "
        "pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=source&distro=debian-12 (null only "
        "when the host's OS was never recorded)"
    )
    installed_version: str
    fixed_version: str | None
    fix_state: Literal["fixed", "held", "no-fix-yet", "will-not-fix", "deferred", "end-of-life"]
    fix_reachable: bool | None
    installable: bool
    actionable: bool
    advisory: str
    cves: list[str]
    severity: str
    kev: bool
    first_seen: datetime
    provenance: list[Provenance]
    risk: Risk | None
    accepted: Accepted | None = Field(
        description="the live risk acceptance covering the finding (`patchpilot accept`); "
        "null when none: an accepted finding stays listed but fails no gate"
    )


class FixSource(_Part):
    """One feed record behind a fix group (duplicates across feeds are merged, not dropped)."""

    feed: str
    source: str
    record_id: str | None


class FixAccepted(_Part):
    """The accepted risks among a fix group's findings."""

    findings: int
    of: int
    until: str = Field(description="the earliest last day of those acceptances (UTC)")


class FixGroup(_Part):
    """One host and one fix: the findings one upgrade closes (see ``patchpilot.app.grouping``)."""

    host: str
    source_package: str
    packages: list[str]
    installed_version: str
    fixed_version: str | None = Field(description="the highest fixed version: the one upgrade")
    fix_state: str
    actionable: bool
    advisories: list[str]
    cves: list[str]
    severity: str
    kev: bool
    score: float | None = Field(description="the highest risk score of the group's findings")
    ssvc: str | None
    due: str | None
    rationale: str | None
    provenance: list[FixSource]
    accepted: FixAccepted | None = Field(
        default=None, description="how many of the group's findings are accepted risks"
    )


class ReportSummary(_Part):
    """Counts of the report's findings."""

    findings: int
    fixes: int = Field(description="fix groups: one per host and upgrade")
    actionable: int
    kev: int
    hosts_with_findings: int
    accepted: int = Field(description="findings a live risk acceptance covers")


# --------------------------------------------------------------------------- the run document


class ItemTest(_Part):
    """The compatibility test of one plan item."""

    status: str
    risk: str
    classifications: list[str]
    reasons: list[str]
    recalled: list[dict[str, Any]] = Field(description="similar past outcomes (memory)")
    llm: dict[str, Any] | None = Field(description="the LLM's compatibility judgment")


class PlanItemJson(_Part):
    """One item of a frozen plan."""

    host: str
    package: str
    from_: str | None = Field(alias="from")
    to: str
    origin: str
    security: bool
    cves: list[str]
    rule: str | None
    reason: str
    test: ItemTest | None = Field(default=None, description="present once the item was tested")


class Exclusion(_Part):
    """An update the plan left out, and why."""

    host: str
    package: str
    to: str
    exclusion: str
    reason: str


class RunPlan(_Part):
    """The frozen plan (its content hash is what an approval approves)."""

    plan_id: str
    content_hash: str
    created_at: datetime
    items: list[PlanItemJson]
    excluded: list[Exclusion]
    unmatched_only: list[str] = Field(
        description="--only names (binary or source) that matched no pending update"
    )
    suggestions: dict[str, str] = Field(
        default_factory=dict,
        description="unmatched --only spec -> what to tell the person (a question naming a "
        "close binary or source, or that it is up to date)",
    )
    up_to_date: list[str] = Field(
        default_factory=list,
        description="unmatched --only specs installed on a target with no pending update",
    )


class Approval(_Part):
    """Whether the run needs approval, why, and (once requested) its record."""

    required: bool
    reasons: list[str]
    status: Literal["pending", "approved", "rejected", "expired"] | None = None
    plan_id: str | None = None
    content_hash: str | None = None
    requested_at: datetime | None = None
    expires_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    comment: str | None = None
    decided_via: str | None = None
    decided_words: str | None = None


class Ring(_Part):
    """One deployment ring and how far it went."""

    name: str
    hosts: list[str]
    status: Literal["empty", "not-started", "halted", "done"]
    reason: str | None
    rejected: list[str]


class Deployment(_Part):
    """What happened to one plan item (exactly one row per item)."""

    host: str
    package: str
    from_: str | None = Field(alias="from")
    to: str
    status: DeploymentStatus
    reason: str | None
    ring: str | None
    compliance: str


class AnalysisMetric(_Part):
    """One metric's evidence in a ring's post-patch analysis (the judge's ``MetricResult``)."""

    name: str
    classification: Literal["Pass", "High", "Low", "Nodata", "NodataFailMetric"]
    baseline: SeriesSummary = Field(description="the baseline's samples as judged")
    canary: SeriesSummary = Field(description="the patched hosts' samples as judged")
    p_value: float | None = Field(description="two-sided Mann-Whitney U p-value")
    statistic: float | None = Field(description="Mann-Whitney U of the canary")
    effect_size: float | None = Field(description="per effect_measure")
    effect_measure: str
    estimate: float | None = Field(description="Hodges-Lehmann shift, canary minus baseline")
    ci_low: float | None
    ci_high: float | None
    unit: str
    direction: str
    critical: bool
    critical_failure: bool
    failed_measurements: int | None
    reason: str


class RingAnalysisEntry(_Part):
    """The post-patch analysis of one ring (``analysis[]``)."""

    ring: str
    verdict: Literal["pass", "marginal", "fail", "nodata"]
    score: float = Field(ge=0, le=100)
    baseline_mode: Literal["peers", "self", "none"] = Field(
        description="unpatched peers over the same window, the hosts' own pre-patch window, "
        "or nothing"
    )
    reason: str = Field(description="a fail starts with 'analysis failed' and names the metrics")
    canary_hosts: list[str]
    baseline_hosts: list[str]
    started_at: datetime = Field(description="the sampling window's start")
    action: Literal["continue", "rolled_back"] | None = Field(
        description="what was done: the next ring, or the ring rolled back (null: undecided)"
    )
    decided_by: str | None = Field(description="who decided on a marginal or nodata analysis")
    metrics: list[AnalysisMetric]


class StageTime(_Part):
    """When one stage of the run started and ended (``store.run_stages``)."""

    name: Stage
    ring: str | None = Field(description="the ring of a deployment or awaiting_window stage")
    started_at: datetime
    ended_at: datetime | None = Field(description="null while the stage goes on")
    seconds: float | None = Field(description="ended_at - started_at (null while it goes on)")


class Unreachable(_Part):
    """A targeted host the run could not reach."""

    host: str
    error: str


class RunDocument(_Part):
    """``patchpilot.run/v1``: the document of a patch run."""

    schema_: Literal["patchpilot.run/v1"] = Field(alias="schema")
    run_id: str
    status: RunStatus
    reason: str | None
    waiting: Literal["approval", "window"] | None
    hint: str | None
    dry_run: bool | None
    target: str | None
    hosts: list[str]
    plan: RunPlan | None
    not_before: datetime | None = Field(
        default=None,
        description="deployment starts no earlier (inside the policy's windows); while it has "
        "not come the run waits with waiting: window",
    )
    trigger: Trigger | None = Field(
        default=None, description="what started the run: cli, api, chat or schedule"
    )
    schedule_id: str | None = Field(default=None, description="the schedule that started it")
    window_end: datetime | None = Field(
        default=None, description="a scheduled run's window end: its approval expires then"
    )
    cutoff_at: datetime | None = Field(
        default=None, description="a scheduled run's cutoff: no new host starts from then on"
    )
    approval: Approval
    window: WindowSlot | None
    rings: list[Ring]
    deployments: list[Deployment]
    unreachable: list[Unreachable]
    compliance: dict[str, str] = Field(description="host -> its worst compliance state")
    assistance: list[dict[str, Any]] = Field(description="LLM assistance records (provenance)")
    stages: list[StageTime] = Field(
        default_factory=list,
        description="each stage's start, end and seconds, in the order they started (a stage "
        "run again keeps its first start and last end)",
    )
    impact: dict[str, Any] | None = Field(
        default=None,
        description="patchpilot.impact/v1: each wave's predicted impact (hosts in flight, "
        "services restarted, expected duration from past deployments of the same packages); "
        "null before the run has a plan",
    )
    analysis: list[RingAnalysisEntry] = Field(
        default_factory=list,
        description="each ring's post-patch analysis, in ring order (policy.analysis)",
    )


class ReportDocument(_Part):
    """``patchpilot.report/v1``: the report of a scan, of stored findings, or of a patch run.

    The report of a patch run (``report RUN_ID`` of a run) also has ``status``, ``reason``,
    ``plan``, ``approval``, ``rings``, ``deployments``, ``unreachable``, ``analysis`` (each
    ring's post-patch analysis), and ``compliance`` on every host; the others never have them.
    """

    schema_: Literal["patchpilot.report/v1"] = Field(alias="schema")
    generated_at: datetime | None
    run: RunRecord | None
    data: ReportData
    hosts: list[ReportHost]
    findings: list[Finding]
    fixes: list[FixGroup] = Field(
        description="the findings grouped per host and fix, highest risk first"
    )
    summary: ReportSummary
    status: RunStatus | None = None
    reason: str | None = None
    plan: RunPlan | None = None
    approval: Approval | None = None
    rings: list[Ring] | None = None
    deployments: list[Deployment] | None = None
    unreachable: list[Unreachable] | None = None
    analysis: list[RingAnalysisEntry] | None = None


class AcceptanceEntry(Accepted):
    """One entry of the accept file and its state on the listing's day."""

    state: Literal["live", "expired"]
    days_left: int = Field(description="days it still holds, today included (0: expired)")


class AcceptancesDocument(_Part):
    """``patchpilot.acceptances/v1``: the accept file's entries (``accept --list``)."""

    schema_: Literal["patchpilot.acceptances/v1"] = Field(alias="schema")
    file: str | None
    today: str = Field(description="the UTC day the states are computed for")
    acceptances: list[AcceptanceEntry]


# --------------------------------------------------------------------------- compliance

ComplianceStateName = Literal["compliant", "non_compliant", "overdue", "accepted", "unknown"]


class ComplianceHost(_Part):
    """One host's compliance: its state and counts of its open items."""

    name: str
    host: str = Field(description="the same as name (the field older clients read)")
    state: ComplianceStateName
    open: int = Field(description="open items (accepted ones included)")
    overdue: int
    accepted: int
    due_soon: int = Field(description="open items due within policy sla_days.due_soon_days")
    oldest_due: str | None = Field(description="the earliest due date of its open items")
    fixed: int
    last_scan: datetime | None = Field(description="its latest scan taken into the history")
    last_scan_ok: bool | None


class ComplianceSLA(_Part):
    """SLA attainment and time to remediate."""

    attainment: float | None = Field(
        description="percent: fixed within SLA / (fixed with a due date + open and overdue)"
    )
    mttr_days: float | None = Field(description="mean days from first seen to fixed")
    median_ttr_days: float | None
    fixed: int
    fixed_within_sla: int
    fixed_late: int
    open_overdue: int
    fixed_by_patchpilot: int
    fixed_external: int


class ComplianceItemJson(_Part):
    """One item (host, source package, advisory) of the compliance history."""

    host: str
    package: str = Field(description="the source package")
    advisory: str
    cves: list[str]
    severity: str
    ssvc: str | None
    kev: bool
    first_seen: datetime
    due: str | None = Field(description="YYYY-MM-DD (UTC); null: no SLA applies")
    sla: str = Field(description="the SLA bound that set the due date")
    fixed_at: datetime | None
    fixed_by: str | None = Field(description="the run id that fixed it, or 'external'")
    confirmed_at: datetime | None = Field(description="the scan that saw it gone")
    fix_candidate: str | None = Field(description="a run installed its fix; no scan since")
    state: ComplianceStateName
    accepted: Accepted | None
    days_open: float
    days_overdue: int | None


class CapacityMonth(_Part):
    """One calendar month of remediation."""

    month: str
    open_at_start: int
    opened: int
    closed: int
    rate: float | None = Field(description="percent: closed / (open at start + opened)")
    partial: bool


class ComplianceCapacity(_Part):
    """Remediation capacity beside Cyentia's figures (percent of open items closed a month)."""

    rate: float | None
    band: str | None
    months: list[CapacityMonth]
    cyentia: dict[str, float]


class SurvivalPoint(_Part):
    """One step of the Kaplan-Meier curve."""

    days: float
    open: float = Field(description="the estimated share of items still open after days")
    at_risk: int
    fixed: int
    censored: int


class ComplianceSurvival(_Part):
    """The Kaplan-Meier time-to-remediate estimate (open items censored)."""

    curve: list[SurvivalPoint]
    items: int
    fixed: int
    censored: int
    median_days: float | None
    open_after: dict[str, float | None]
    cyentia: dict[str, float]


class HistoryPoint(_Part):
    """Open and overdue items at the end of one UTC day."""

    date: str
    open: int
    overdue: int


class ComplianceFilters(_Part):
    """The filters the listing was made with."""

    host: str | None
    overdue: bool
    due_within: int | None


class ComplianceDocument(_Part):
    """``patchpilot.compliance/v1``: compliance against SLAs (``patchpilot compliance``, ``GET
    /api/v1/compliance``)."""

    schema_: Literal["patchpilot.compliance/v1"] = Field(alias="schema")
    generated_at: datetime
    today: str
    filters: ComplianceFilters
    policy: dict[str, Any] | None
    summary: dict[str, int]
    hosts: list[ComplianceHost]
    sla: ComplianceSLA
    items: list[ComplianceItemJson]
    due_soon: list[ComplianceItemJson]
    capacity: ComplianceCapacity
    survival: ComplianceSurvival
    history: list[HistoryPoint]
    total: int = Field(description="the number of hosts listed")


DOCUMENTS: Final[dict[str, type[BaseModel]]] = {
    "patchpilot.report/v1": ReportDocument,
    "patchpilot.run/v1": RunDocument,
    "patchpilot.acceptances/v1": AcceptancesDocument,
    "patchpilot.compliance/v1": ComplianceDocument,
}
"""Each published schema name and its model."""


def schema_file(name: str, directory: Path = SCHEMA_DIR) -> Path:
    """The committed schema of ``name``: ``patchpilot.run/v1`` -> ``patchpilot.run.v1.json``."""
    return directory / f"{name.replace('/', '.')}.json"


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of document ``name``, generated from its model."""
    model = DOCUMENTS[name]
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://patchpilot.dev/schemas/{name.replace('/', '.')}.json",
        **schema,
    }


def render_schema(name: str) -> str:
    """:func:`json_schema` as the committed file's text."""
    return json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every document's schema under ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DOCUMENTS:
        path = schema_file(name, directory)
        path.write_text(render_schema(name), encoding="utf-8")
        written.append(path)
    return written


def validate_compliance(document: dict[str, Any]) -> ComplianceDocument:
    """``document`` as a :class:`ComplianceDocument` (raises ``ValidationError`` if not one)."""
    return ComplianceDocument.model_validate(document)


def validate_report(document: dict[str, Any]) -> ReportDocument:
    """``document`` as a :class:`ReportDocument` (raises ``ValidationError`` if it is not one)."""
    return ReportDocument.model_validate(document)


def validate_run(document: dict[str, Any]) -> RunDocument:
    """``document`` as a :class:`RunDocument` (raises ``ValidationError`` if it is not one)."""
    return RunDocument.model_validate(document)


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m patchpilot.app.documents",
        description="Write the JSON Schema of the published documents under schemas/.",
    )
    parser.add_argument("--write-schemas", action="store_true", help="(re)write the files")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="target directory")
    args = parser.parse_args(argv)
    if not args.write_schemas:
        parser.print_help()
        return
    for path in write_schemas(args.dir):
        structlog.get_logger(__name__).info("documents.schema_written", path=str(path))


if __name__ == "__main__":
    _main()
