"""Question tools that need a patch run's document: compliance, run details, why not patched.

A run's plan (items, exclusions and their reasons), its rings and its per-host compliance live
in the run's checkpoint, which only the graphs layer reads; so these tools sit in the
application layer and register into the same :data:`~patchpilot.tools.queries.CATALOG` as the
store-only tools of :mod:`patchpilot.tools.queries` (importing this module registers them; the
chat orchestrator does).

The run document is read with :func:`patchpilot.app.runs.report` (``patchpilot report RUN_ID``);
a caller may pass another reader as ``QueryContext.extra["run_document"]``
(``run_id -> document or None``), e.g. a test with a document built in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, cast

from pydantic import Field, field_validator

from patchpilot.core.intents import HostName, PackageSpec, normalize_run_id
from patchpilot.core.models import PendingUpdate
from patchpilot.core.store import RunRecord, Store
from patchpilot.tools.queries import (
    CATALOG,
    QueryContext,
    QueryInput,
    QueryResult,
    QueryTool,
    register,
)
from patchpilot.tools.queries.common import (
    ResolvedScope,
    ScopedInput,
    joined,
    latest_snapshots,
    resolve_scope,
    shown,
    today,
)
from patchpilot.tools.queries.history import recall

__all__ = [
    "CATALOG",
    "COMPLIANCE",
    "RUN_DETAILS",
    "WHY_NOT_PATCHED",
    "ComplianceInput",
    "RunDetailsInput",
    "WhyNotPatchedInput",
    "question_tools",
]

MAX_RUNS_SEARCHED = 200
"""Recent runs searched for a host's latest patch run."""

DocumentReader = Callable[[str], dict[str, Any] | None]


def question_tools() -> dict[str, QueryTool[Any]]:
    """Every question tool (store-only and run-document ones), by name."""
    return dict(CATALOG)


def _reader(context: QueryContext) -> DocumentReader:
    given = context.extra.get("run_document")
    if given is not None:
        return cast(DocumentReader, given)
    from patchpilot.app import runs

    def read(run_id: str) -> dict[str, Any] | None:
        return runs.report(context.settings, context.store, run_id)

    return read


def _patch_runs(store: Store, host: str | None = None) -> list[RunRecord]:
    """Patch runs, newest first (those that included ``host``, when given)."""
    return [
        r
        for r in store.list_runs(limit=MAX_RUNS_SEARCHED)
        if r.kind == "run" and (host is None or host in r.params.get("hosts", []))
    ]


def _status(store: Store, run_id: str | None) -> str | None:
    record = store.get_run(run_id) if run_id else None
    return record.status if record else None


def _latest_document(
    context: QueryContext, host: str, cache: dict[str, dict[str, Any] | None]
) -> tuple[str | None, dict[str, Any] | None]:
    """The newest patch run that included ``host`` and has a document, and that document."""
    read = _reader(context)
    for run in _patch_runs(context.store, host):
        if run.run_id not in cache:
            cache[run.run_id] = read(run.run_id)
        doc = cache[run.run_id]
        if doc is not None:
            return run.run_id, doc
    return None, None


# --------------------------------------------------------------------------- compliance


class ComplianceInput(ScopedInput):
    """Which hosts' compliance and SLA state to show."""

    overdue_only: bool = Field(default=False, description="only hosts with overdue findings")


def _host_scope(context: QueryContext, scope: ResolvedScope) -> list[str]:
    """The hosts to report: scanned ones in scope, plus inventory hosts in scope."""
    names = set(latest_snapshots(context.store, scope))
    names |= {r.finding.host for r in context.store.findings() if scope.selects(r.finding.host)}
    if context.inventory is not None:
        names |= {h for h in context.inventory.hosts if scope.selects(h)}
    elif scope.names is not None:
        names |= scope.names
    return sorted(names)


def _compliance(context: QueryContext, args: ComplianceInput) -> QueryResult:
    scope = resolve_scope(context, args)
    day = today(context)
    findings = context.store.findings()
    cache: dict[str, dict[str, Any] | None] = {}
    rows: list[dict[str, Any]] = []
    for host in _host_scope(context, scope):
        mine = [r for r in findings if r.finding.host == host]
        dues: list[date] = [r.risk.due_date for r in mine if r.risk and r.risk.due_date]
        overdue = [d for d in dues if d < day]
        upcoming = sorted(d for d in dues if d >= day)
        run_id, doc = _latest_document(context, host, cache)
        if run_id is None:  # patch runs whose checkpoint is gone: their id and status only
            run_id = next((r.run_id for r in _patch_runs(context.store, host)), None)
        state = "overdue" if overdue else "due" if upcoming else "no-sla" if mine else "clean"
        row = {
            "host": host,
            "sla": state,
            "open_findings": len(mine),
            "overdue": len(overdue),
            "oldest_overdue": min(overdue).isoformat() if overdue else None,
            "next_due": upcoming[0].isoformat() if upcoming else None,
            "run_id": run_id,
            "run_status": doc["status"] if doc else _status(context.store, run_id),
            "compliance": doc["compliance"].get(host) if doc else None,
        }
        if args.overdue_only and not overdue:
            continue
        rows.append(row)
    understood = "compliance and SLA state " + args.describe_scope()
    if args.overdue_only:
        understood += " (hosts with overdue findings only)"
    if not rows:
        text = "No host in scope" + (" has overdue findings." if args.overdue_only else ".")
        if scope.note():
            text += " " + scope.note()
    else:
        late = [r for r in rows if r["overdue"]]
        lines = [f"{len(rows)} host(s), {len(late)} with overdue findings:"]
        for r in rows:
            sla = (
                f"{r['overdue']} overdue (since {r['oldest_overdue']})"
                if r["overdue"]
                else f"next due {r['next_due']}"
                if r["next_due"]
                else "nothing due"
            )
            run = (
                f"compliance {r['compliance']} after run {r['run_id']} ({r['run_status']})"
                if r["compliance"]
                else f"latest patch run {r['run_id']} ({r['run_status']}; no checkpoint, so no "
                "compliance state)"
                if r["run_id"]
                else "not patched by patchpilot yet"
            )
            lines.append(
                f"- {shown(r['host'])}: {r['open_findings']} open finding(s), {sla}; {run}"
            )
        if scope.note():
            lines.append(scope.note())
        text = "\n".join(lines)
    return QueryResult.of(
        "compliance",
        understood,
        ("host", "sla", "open_findings", "overdue", "next_due", "compliance", "run_id"),
        rows,
        text,
    )


COMPLIANCE = register(
    QueryTool(
        name="compliance",
        description="Per host: SLA state (open findings, how many overdue, the next due date) "
        "and the compliance its latest patch run left it in.",
        input_model=ComplianceInput,
        run=_compliance,
    )
)


# --------------------------------------------------------------------------- run details


class RunDetailsInput(QueryInput):
    """Which run to explain."""

    run_id: str | None = Field(default=None, description="the run (default: the latest patch run)")

    @field_validator("run_id")
    @classmethod
    def _run(cls, value: str | None) -> str | None:
        return None if value is None else normalize_run_id(value)


def run_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """What a run did and why, one row per fact: plan items with their deployment, exclusions
    with their reasons, ring halts and rejections, unreachable hosts, the approval."""
    rows: list[dict[str, Any]] = []
    deployed = {(d["host"], d["package"]): d for d in doc.get("deployments", [])}
    plan = doc.get("plan") or {}
    for item in plan.get("items", []):
        d = deployed.get((item["host"], item["package"]), {})
        rows.append(
            {
                "kind": "item",
                "host": item["host"],
                "package": item["package"],
                "from": item["from"],
                "to": item["to"],
                "status": d.get("status", "pending"),
                "reason": d.get("reason") or item.get("reason"),
                "rule": item.get("rule"),
                "test": (item.get("test") or {}).get("status"),
            }
        )
    for e in plan.get("excluded", []):
        rows.append(
            {
                "kind": "excluded",
                "host": e["host"],
                "package": e["package"],
                "to": e["to"],
                "status": e["exclusion"],
                "reason": e["reason"],
            }
        )
    for name in plan.get("unmatched_only", []):
        rows.append(
            {"kind": "unmatched", "package": name, "reason": "named, but no host offers it"}
        )
    for ring in doc.get("rings", []):
        if ring["status"] == "halted" or ring.get("rejected"):
            rows.append(
                {
                    "kind": "halt" if ring["status"] == "halted" else "rejection",
                    "ring": ring["name"],
                    "hosts": ring["hosts"],
                    "status": ring["status"],
                    "reason": ring.get("reason"),
                    "rejected": ring.get("rejected", []),
                }
            )
    for u in doc.get("unreachable", []):
        rows.append({"kind": "unreachable", "host": u["host"], "reason": u["error"]})
    approval = doc.get("approval") or {}
    if approval.get("required") or approval.get("status"):
        rows.append(
            {
                "kind": "approval",
                "status": approval.get("status", "required"),
                "reason": "; ".join(approval.get("reasons", [])),
                "decided_by": approval.get("decided_by"),
                "comment": approval.get("comment"),
            }
        )
    return rows


def _run_details(context: QueryContext, args: RunDetailsInput) -> QueryResult:
    run_id = args.run_id
    if run_id is None:
        runs = _patch_runs(context.store)
        if not runs:
            return QueryResult(
                tool="run_details",
                understood_as="what the latest patch run did and why",
                text="No patch run yet.",
            )
        run_id = runs[0].run_id
    understood = f"what run {run_id} did and why"
    record = context.store.get_run(run_id)
    if record is None:
        return QueryResult(
            tool="run_details",
            understood_as=understood,
            error=f"no run {run_id}; list runs with the runs tool",
        )
    doc = _reader(context)(run_id) if record.kind == "run" else None
    if doc is None:
        what = (
            "a scan (no plan): ask for its findings"
            if record.kind == "scan"
            else "its checkpoint is gone, so its plan and reasons are not available"
        )
        return QueryResult(
            tool="run_details",
            understood_as=understood,
            rows=({"kind": "run", "run_id": run_id, "status": record.status},),
            total=1,
            text=f"Run {run_id} ({shown(record.kind)}, {shown(record.status)}): {what}.",
        )
    rows = run_rows(doc)
    lines = [
        f"Run {run_id}: {shown(doc['status'])}"
        + (f" ({shown(doc['reason'])})" if doc.get("reason") else "")
    ]
    items = [r for r in rows if r["kind"] == "item"]
    if items:
        lines.append(f"{len(items)} plan item(s):")
        lines.extend(
            f"- {shown(r['host'])}: {shown(r['package'])} {shown(r['from'] or 'none')} -> "
            f"{shown(r['to'])}: {shown(r['status'])}"
            + (f" ({shown(r['reason'])})" if r["reason"] else "")
            for r in items[:20]
        )
    excluded = [r for r in rows if r["kind"] == "excluded"]
    if excluded:
        lines.append(f"{len(excluded)} left out:")
        lines.extend(
            f"- {shown(r['host'])}: {shown(r['package'])} {shown(r['to'])}: "
            f"{shown(r['status'])} ({shown(r['reason'])})"
            for r in excluded[:20]
        )
    for r in rows:
        if r["kind"] in ("halt", "rejection"):
            lines.append(
                f"Ring {shown(r['ring'])} {shown(r['status'])}: {shown(r['reason'] or '')}"
                + (f"; rejected {joined(r['rejected'])}" if r["rejected"] else "")
            )
        elif r["kind"] == "unreachable":
            lines.append(f"{shown(r['host'])} not reached: {shown(r['reason'])}")
        elif r["kind"] == "unmatched":
            lines.append(f"{shown(r['package'])}: {r['reason']}")
        elif r["kind"] == "approval":
            decided = f" by {shown(r['decided_by'])}" if r["decided_by"] else ""
            comment = f": {shown(r['comment'])}" if r["comment"] else ""
            lines.append(
                f"Approval {shown(r['status'])}{decided}{comment}"
                + (f" (needed because: {shown(r['reason'])})" if r["reason"] else "")
            )
    if doc.get("compliance"):
        lines.append(
            "Compliance: " + ", ".join(f"{shown(h)} {s}" for h, s in doc["compliance"].items())
        )
    return QueryResult.of(
        "run_details",
        understood,
        ("kind", "host", "package", "to", "status", "reason"),
        rows,
        "\n".join(lines),
    )


RUN_DETAILS = register(
    QueryTool(
        name="run_details",
        description="What a patch run did and why: plan items and their deployment, updates "
        "left out with the reason, ring halts and rejections, unreachable hosts, the approval.",
        input_model=RunDetailsInput,
        run=_run_details,
    )
)


# --------------------------------------------------------------------------- why not patched


class WhyNotPatchedInput(QueryInput):
    """Which host and package (and version) the person expected to be upgraded."""

    host: HostName = Field(description="the host, e.g. 'db-1'")
    package: PackageSpec = Field(
        description="the package (binary or source name) and, optionally, the version expected"
    )


def _names(context: QueryContext, host: str, run_id: str | None, package: str) -> set[str]:
    """``package`` and every binary of its source on ``host`` (and its source)."""
    names = {package}
    if run_id is None:
        return names
    snapshot = context.store.load_host_snapshot(run_id, host)
    if snapshot is None:
        return names
    sources = {p.source_name for p in snapshot.packages if p.name == package} | {package}
    names |= sources
    names |= {p.name for p in snapshot.packages if p.source_name in sources}
    return names


def _plan_reasons(
    doc: dict[str, Any], run_id: str, host: str, names: set[str], version: str | None
) -> list[dict[str, Any]]:
    """What the run's document says about ``host`` and the package ``names``."""
    rows: list[dict[str, Any]] = []
    for r in run_rows(doc):
        mine = r.get("host") == host and r.get("package") in names
        if r["kind"] == "excluded" and mine and (version is None or r["to"] == version):
            rows.append(
                {
                    "source": "plan",
                    "run_id": run_id,
                    "host": host,
                    "package": r["package"],
                    "version": r["to"],
                    "exclusion": r["status"],
                    "reason": f"run {run_id} left {r['package']} {r['to']} out: "
                    f"{r['status']} ({r['reason']})",
                }
            )
        elif r["kind"] == "item" and mine and r["status"] != "installed":
            rows.append(
                {
                    "source": "deployment",
                    "run_id": run_id,
                    "host": host,
                    "package": r["package"],
                    "version": r["to"],
                    "reason": f"run {run_id} planned {r['package']} {r['to']}: {r['status']}"
                    + (f" ({r['reason']})" if r["reason"] else ""),
                }
            )
        elif r["kind"] in ("halt", "rejection") and host in r["hosts"]:
            rows.append(
                {
                    "source": "ring",
                    "run_id": run_id,
                    "reason": f"run {run_id}: ring {r['ring']} {r['status']}"
                    + (f" ({r['reason']})" if r["reason"] else ""),
                }
            )
        elif r["kind"] == "unreachable" and r["host"] == host:
            rows.append(
                {
                    "source": "unreachable",
                    "run_id": run_id,
                    "reason": f"run {run_id} could not reach {host}: {r['reason']}",
                }
            )
        elif (
            r["kind"] == "approval"
            and r["status"] in ("pending", "rejected", "expired")
            and any(x["source"] == "deployment" for x in rows)
        ):
            by = f" by {r['decided_by']}" if r["decided_by"] else ""
            comment = f": {r['comment']}" if r["comment"] else ""
            rows.append(
                {
                    "source": "approval",
                    "run_id": run_id,
                    "reason": f"the approval of run {run_id} is {r['status']}{by}{comment}",
                }
            )
    return rows


def _offer_reasons(
    host: str,
    package: str,
    version: str | None,
    scan_run: str | None,
    offered: list[PendingUpdate],
) -> list[dict[str, Any]]:
    """What the host's repositories offer, when that is the reason."""
    if not offered:
        return [
            {
                "source": "offer",
                "host": host,
                "reason": f"{host}'s repositories offer no update of {package} (scan {scan_run})",
            }
        ]
    if version is None:
        return []
    if version in {u.installed_version for u in offered}:
        return [{"source": "offer", "host": host, "reason": f"{version} is installed"}]
    if all(u.candidate_version != version for u in offered):
        candidates = ", ".join(sorted({u.candidate_version for u in offered}))
        return [
            {
                "source": "offer",
                "host": host,
                "reason": f"{host}'s repositories offer {package} {candidates}, not {version}",
            }
        ]
    return []


def _why(context: QueryContext, args: WhyNotPatchedInput) -> QueryResult:
    host, package, version = args.host, args.package.name, args.package.version
    target = f"{package} {version}" if version else package
    snapshots = latest_snapshots(context.store, ResolvedScope(names=frozenset({host})))
    scan_run, result = snapshots.get(host, (None, None))
    names = _names(context, host, scan_run, package)
    facts = result.facts if result is not None else None
    held = sorted(names & set(facts.held_packages or ())) if facts is not None else []
    offered = [
        u for u in (result.pending if result else ()) if u.name in names or u.source_name in names
    ]
    rows: list[dict[str, Any]] = []
    for name in held:
        update = next((u for u in offered if u.name == name), None)
        keeps = (
            f": apt will not upgrade it (its candidate is {update.candidate_version})"
            if update
            else ""
        )
        rows.append(
            {
                "source": "hold",
                "host": host,
                "package": name,
                "reason": f"{host} holds {name} (apt-mark hold){keeps}; "
                f"release it with `apt-mark unhold {name}` on the host",
            }
        )
    run_id, doc = _latest_document(context, host, {})
    if run_id is not None and doc is not None:
        rows.extend(_plan_reasons(doc, run_id, host, names, version))
    for rej in context.store.active_rejections():
        if rej.package in names and (version is None or rej.version == version):
            rows.append(
                {
                    "source": "rejection",
                    "run_id": rej.run_id,
                    "package": rej.package,
                    "version": rej.version,
                    "reason": f"{rej.spec} is rejected in the baseline since run {rej.run_id}: "
                    f"{rej.reason} (clear with `patchpilot baseline clear {rej.spec}`)",
                }
            )
    if result is None:
        rows.append({"source": "scan", "host": host, "reason": f"{host} has not been scanned yet"})
    elif not held:
        rows.extend(_offer_reasons(host, package, version, scan_run, offered))
    if run_id is None:
        other = next(iter(_patch_runs(context.store, host)), None)
        rows.append(
            {
                "source": "run",
                "host": host,
                "run_id": other.run_id if other else None,
                "reason": f"run {other.run_id} ({other.status}) included {host}, but its "
                "checkpoint is gone: its plan is not available"
                if other
                else f"no patch run has included {host} yet",
            }
        )
    recalled, problem = recall(context, f"{package} incident failure", names, ("incidents",))
    rows.extend({"source": "memory", **r} for r in recalled)
    lines = [f"Why {shown(host)} was not upgraded to {shown(target)}:"]
    for r in rows:
        said = f"[{r['id']}] {r['text']}" if r["source"] == "memory" else r["reason"]
        lines.append(f"- {shown(said)}")
    if not rows:
        lines.append("- nothing recorded explains it (no hold, exclusion, rejection or incident)")
    if problem:
        lines.append(problem)
    return QueryResult.of(
        "why_not_patched",
        f"why {host} was not upgraded to {target}",
        ("source", "reason", "run_id"),
        rows,
        "\n".join(lines),
    )


WHY_NOT_PATCHED = register(
    QueryTool(
        name="why_not_patched",
        description="Why a host was not upgraded to a package (version): its holds, the latest "
        "plan's exclusion reason, the deployment or approval state, baseline rejections, what "
        "its repositories offer, and incidents the memory recalls.",
        input_model=WhyNotPatchedInput,
        run=_why,
    )
)
