"""Findings by any filter ``patchpilot findings`` has, plus overdue, package and CVE.

Each host's latest scan (or one run), like ``patchpilot findings``: one row per finding (host,
source package, advisory) with its risk score, SSVC decision and SLA due date. The text groups
them per host and fix (one line per host and upgrade), like the findings table.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import Field, field_validator

from patchpilot.core.intents import PackageSpec, normalize_cve, normalize_run_id
from patchpilot.core.models import FixStatus, Severity
from patchpilot.core.store import FindingRecord
from patchpilot.tools.queries.base import QueryContext, QueryResult, QueryTool, register
from patchpilot.tools.queries.common import ScopedInput, joined, resolve_scope, shown, today

__all__ = ["FINDINGS", "FindingsInput", "finding_row"]

COLUMNS = (
    "host",
    "source_package",
    "installed",
    "fixed",
    "fix_state",
    "severity",
    "advisory",
    "cves",
    "kev",
    "score",
    "due",
)
SHOWN_GROUPS = 20
"""Fix groups listed in an answer's text (every finding is in the rows)."""


class FindingsInput(ScopedInput):
    """Which findings to list (all filters combine)."""

    severity_at_least: Severity | None = Field(
        default=None,
        description="severity at least this; unknown severity counts unless "
        "include_unknown_severity is false",
    )
    include_unknown_severity: bool = Field(
        default=True, description="keep findings no feed rates (fail closed, like the CLI)"
    )
    kev_only: bool = Field(default=False, description="only CVEs in CISA's KEV catalog")
    fix_state: FixStatus | None = Field(
        default=None, description="only this fix state (fixed, held, no-fix-yet, ...)"
    )
    overdue: bool = Field(default=False, description="only findings past their SLA due date")
    actionable: bool = Field(default=False, description="only fixed-and-reachable findings")
    packages: tuple[PackageSpec, ...] = Field(
        default=(),
        description="only these packages: a source name, or a binary name (selects its source)",
    )
    cves: tuple[str, ...] = Field(default=(), description="only findings naming these CVEs")
    run_id: str | None = Field(default=None, description="one run's findings (default: latest)")

    @field_validator("cves")
    @classmethod
    def _cves(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalize_cve(c) for c in value)

    @field_validator("run_id")
    @classmethod
    def _run(cls, value: str | None) -> str | None:
        return None if value is None else normalize_run_id(value)


def finding_row(record: FindingRecord, day: date) -> dict[str, Any]:
    """The row of one finding (the columns of ``patchpilot findings --format csv``)."""
    f, risk = record.finding, record.risk
    due = risk.due_date if risk else None
    return {
        "host": f.host,
        "source_package": f.source_package,
        "binary_packages": list(f.binary_packages),
        "installed": f.installed_source_version,
        "fixed": f.fixed_version,
        "fix_state": f.fix.status.value,
        "severity": f.severity.value,
        "advisory": f.advisory_id,
        "cves": list(f.cves),
        "kev": record.kev,
        "score": risk.score if risk else None,
        "ssvc": risk.ssvc.value if risk else None,
        "due": due.isoformat() if due else None,
        "overdue": bool(due and due < day),
        "actionable": f.fix.status is FixStatus.FIXED and bool(f.fix_reachable),
    }


def _describe(args: FindingsInput) -> str:
    parts = ["findings"]
    if args.packages:
        parts.append("of " + ", ".join(p.name for p in args.packages))
    if args.cves:
        parts.append("for " + ", ".join(args.cves))
    parts.append(args.describe_scope())
    filters = []
    if args.severity_at_least is not None:
        filters.append(
            f"severity ≥ {args.severity_at_least.value}"
            + (" or unknown" if args.include_unknown_severity else "")
        )
    if args.kev_only:
        filters.append("known-exploited (KEV) only")
    if args.fix_state is not None:
        filters.append(f"fix state {args.fix_state.value}")
    if args.overdue:
        filters.append("overdue (past the SLA due date)")
    if args.actionable:
        filters.append("actionable only")
    if args.run_id:
        filters.append(f"run {args.run_id}")
    else:
        filters.append("latest scan per host")
    return " ".join(parts) + " (" + ", ".join(filters) + ")"


def _findings(context: QueryContext, args: FindingsInput) -> QueryResult:
    store = context.store
    understood = _describe(args)
    if args.run_id is not None and store.get_run(args.run_id) is None:
        return QueryResult(
            tool="findings",
            understood_as=understood,
            error=f"no run {args.run_id}; list runs with the runs tool",
        )
    scope = resolve_scope(context, args)
    records = store.findings(
        run_id=args.run_id,
        min_severity=args.severity_at_least,
        include_unknown_severity=args.include_unknown_severity,
        kev=True if args.kev_only else None,
        fix_status=args.fix_state,
        actionable=True if args.actionable else None,
    )
    day = today(context)
    names = {p.name for p in args.packages}
    wanted = set(args.cves)
    rows = []
    for record in records:
        f = record.finding
        if not scope.selects(f.host):
            continue
        if names and f.source_package not in names and not names & set(f.binary_packages):
            continue
        if wanted and not wanted & set(f.cves):
            continue
        row = finding_row(record, day)
        if args.overdue and not row["overdue"]:
            continue
        rows.append(row)
    scanned = bool(store.list_runs(limit=1))
    if not scanned:
        text = "No scan yet: run `patchpilot scan` first."
    elif not rows:
        text = "No finding matches." + (f" {scope.note()}" if scope.note() else "")
    else:
        text = _text(rows, scope.note())
    if args.kev_only and not any(s.kind.value == "kev" for s in store.feed_status()):
        # Fail closed: "none in KEV" would be a claim nobody checked.
        text += (
            "\nNo KEV catalog is imported, so no finding can be known to be in KEV: "
            "run `patchpilot feeds update` or `patchpilot feeds import kev FILE`."
        )
    return QueryResult.of(
        "findings",
        understood,
        COLUMNS,
        rows,
        text,
    )


def _text(rows: list[dict[str, Any]], note: str) -> str:
    groups: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["host"], row["source_package"], row["fixed"]), []).append(row)
    hosts = sorted({r["host"] for r in rows})
    kev = sum(1 for r in rows if r["kev"])
    overdue = sum(1 for r in rows if r["overdue"])
    unknown = sum(1 for r in rows if r["severity"] == Severity.UNKNOWN.value)
    lines = [
        f"{len(rows)} finding(s) in {len(groups)} fix(es) on {len(hosts)} host(s): "
        f"{kev} in KEV, {overdue} overdue"
        + (f", {unknown} of unknown severity (no feed rates them)" if unknown else "")
        + "."
    ]
    for (host, source, fixed), members in list(groups.items())[:SHOWN_GROUPS]:
        first = members[0]
        state = first["fix_state"]
        fix = f"-> {shown(fixed)}" if fixed else f"({shown(state)})"
        if fixed and state != FixStatus.FIXED.value:
            fix += f" ({shown(state)})"
        dues = sorted(r["due"] for r in members if r["due"])
        scores = [r["score"] for r in members if r["score"] is not None]
        details = [joined([r["advisory"] for r in members], 2)]
        cves = sorted({c for r in members for c in r["cves"]})
        if cves:
            details.append(joined(cves, 3))
        if any(r["kev"] for r in members):
            details.append("KEV")
        if dues:
            details.append(
                f"due {dues[0]}" + (" OVERDUE" if any(r["overdue"] for r in members) else "")
            )
        if scores:
            details.append(f"score {max(scores)}")
        lines.append(
            f"- {shown(host)}: {shown(source)} {shown(first['installed'])} {fix} "
            f"({'; '.join(details)})"
        )
    if len(groups) > SHOWN_GROUPS:
        lines.append(f"- … {len(groups) - SHOWN_GROUPS} more fix(es)")
    if note:
        lines.append(note)
    return "\n".join(lines)


FINDINGS = register(
    QueryTool(
        name="findings",
        description="Open findings (latest scan per host, or one run) by host, tag or group; "
        "filters: severity at least, KEV only, fix state, overdue (past the SLA due date), "
        "actionable, package (source or binary name), CVE.",
        input_model=FindingsInput,
        run=_findings,
    )
)
