"""Runs and approvals, as ``patchpilot runs`` and ``patchpilot approvals`` list them.

Read-only: an approval past its deadline is shown ``expired`` here, but only ``patchpilot
approvals`` (or a decision) records the expiry and ends its run.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from pydantic import Field

from patchpilot.core.models import utcnow
from patchpilot.core.store.records import ApprovalStatus
from patchpilot.tools.queries.base import (
    QueryContext,
    QueryInput,
    QueryResult,
    QueryTool,
    register,
)
from patchpilot.tools.queries.common import joined, shown

__all__ = ["APPROVALS", "RUNS", "ApprovalsInput", "RunsInput"]


class RunsInput(QueryInput):
    """Which runs to list (newest first)."""

    limit: int = Field(default=10, ge=1, le=100, description="how many runs")
    kind: Literal["scan", "run"] | None = Field(
        default=None, description="'scan' or 'run' (a patch run); default both"
    )
    status: str | None = Field(
        default=None,
        max_length=40,
        pattern=r"^[a-z_]+$",
        description="only this status (completed, awaiting_approval, failed, running, ...)",
    )


def _runs(context: QueryContext, args: RunsInput) -> QueryResult:
    runs = context.store.list_runs(limit=500 if (args.kind or args.status) else args.limit)
    rows: list[dict[str, Any]] = []
    for r in runs:
        if args.kind is not None and r.kind != args.kind:
            continue
        if args.status is not None and r.status != args.status:
            continue
        rows.append(
            {
                "run_id": r.run_id,
                "kind": r.kind,
                "target": r.target,
                "status": r.status,
                "started": r.started_at.isoformat(timespec="seconds"),
                "finished": r.finished_at.isoformat(timespec="seconds") if r.finished_at else None,
                "findings": (r.summary or {}).get("findings"),
                "hosts": list(r.params.get("hosts", [])),
            }
        )
        if len(rows) >= args.limit:
            break
    what = "patch runs" if args.kind == "run" else "scans" if args.kind == "scan" else "runs"
    understood = f"the {args.limit} most recent {what}" + (
        f" with status {args.status}" if args.status else ""
    )
    if not rows:
        text = f"No {what} yet." if not args.status else f"No {what} with status {args.status}."
    else:
        lines = [f"{len(rows)} recent {what}:"]
        lines.extend(
            f"- {r['run_id']} {shown(r['kind'])} {shown(r['target'])}: {shown(r['status'])}"
            f" (started {r['started'][:16].replace('T', ' ')} UTC)"
            for r in rows
        )
        text = "\n".join(lines)
    return QueryResult.of(
        "runs",
        understood,
        ("run_id", "kind", "target", "status", "started", "finished", "findings"),
        rows,
        text,
    )


RUNS = register(
    QueryTool(
        name="runs",
        description="Recent runs (scans and patch runs), newest first, with their status.",
        input_model=RunsInput,
        run=_runs,
    )
)


class ApprovalsInput(QueryInput):
    """Which approval requests to list."""

    status: Literal["pending", "approved", "rejected", "expired", "all"] = Field(
        default="pending", description="'pending' (default: the runs waiting), or 'all'"
    )


def _approvals(context: QueryContext, args: ApprovalsInput) -> QueryResult:
    now = context.extra.get("now") or utcnow()
    wanted: ApprovalStatus | None = (
        None if args.status in ("all", "expired") else cast("ApprovalStatus", args.status)
    )
    records = context.store.approvals(wanted)
    rows: list[dict[str, Any]] = []
    for r in records:
        status = "expired" if r.expired_at(now) else r.status
        if args.status == "expired" and status != "expired":
            continue
        items = r.payload.get("items", [])
        rows.append(
            {
                "run_id": r.run_id,
                "status": status,
                "plan_id": r.plan_id,
                "items": len(items),
                "hosts": sorted({str(i.get("host")) for i in items}),
                "packages": sorted({str(i.get("package")) for i in items}),
                "reasons": list(r.reasons),
                "requested_at": r.requested_at.isoformat(timespec="seconds"),
                "expires_at": r.expires_at.isoformat(timespec="seconds"),
                "decided_by": r.decided_by,
                "decided_via": r.decided_via,
                "comment": r.comment,
            }
        )
    understood = (
        "runs waiting for approval" if args.status == "pending" else f"{args.status} approvals"
    )
    pending = [row for row in rows if row["status"] == "pending"]
    lines = [
        f"{len(pending)} run(s) waiting for approval" + (":" if pending else ".")
        if args.status == "pending"
        else f"{len(rows)} approval(s) ({args.status}):"
    ]
    for row in rows:
        decided = (
            f"; {shown(row['status'])} by {shown(row['decided_by'])}"
            + (f": {shown(row['comment'])}" if row["comment"] else "")
            if row["decided_by"]
            else ""
        )
        expires = row["expires_at"][:16].replace("T", " ")
        lines.append(
            f"- {row['run_id']}: {row['items']} item(s) on "
            f"{joined(row['hosts'], 5) or 'no host'}; {shown('; '.join(row['reasons']))}; "
            f"expires {expires} UTC{decided}"
        )
    if pending:
        lines.append("Approve with `approve RUN_ID` (or `patchpilot approve RUN_ID`).")
    return QueryResult.of(
        "approvals",
        understood,
        ("run_id", "status", "items", "hosts", "expires_at", "reasons"),
        rows,
        "\n".join(lines),
    )


APPROVALS = register(
    QueryTool(
        name="approvals",
        description="Approval requests: the runs waiting for a person's approval (default), or "
        "decided/expired ones, with their items, hosts, reasons and deadline.",
        input_model=ApprovalsInput,
        run=_approvals,
    )
)
