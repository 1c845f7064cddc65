"""The document of a patch run (``run``, ``approve``, ``reject``, ``resume`` and ``report``).

``schema: patchpilot.run/v1``; fields are only ever added within a schema version::

    {"schema": "patchpilot.run/v1", "run_id": ..., "status": "completed" | "partial"
     | "awaiting_approval" | "halted" | "failed" | "rejected", "reason": ...,
     "waiting": "approval" | "window" | null, "hint": ..., "dry_run": ..., "plan": {...},
     "not_before": ISO 8601 | null, "trigger": "cli" | "api" | "chat" | "schedule",
     "schedule_id": ... | null, "window_end": ISO 8601 | null, "cutoff_at": ISO 8601 | null,
     "approval": {...}, "rings": [...],
     "deployments": [{"host", "package", "from", "to", "status", "reason", "ring",
                      "compliance"}],
     "unreachable": [{"host": ..., "error": ...}],
     "compliance": {"HOST": "installed" | ...},
     "analysis": [{"ring", "verdict": "pass" | "marginal" | "fail" | "nodata", "score",
                   "baseline_mode": "peers" | "self" | "none", "reason", "action",
                   "metrics": [{"name", "classification", "baseline", "canary", "p_value",
                                "statistic", "effect_size", "reason", ...}]}]}

``trigger`` says what started the run; a run a schedule started (``trigger: "schedule"``) names
its ``schedule_id``, and its occurrence's ``window_end`` (the approval expires then at the
latest) and ``cutoff_at`` (no host starts from then on; the run ends ``halted`` if it has not
deployed by then).

``waiting: "window"`` covers both a closed maintenance window and a not-before time that has not
come (``not_before``: "tonight", "at 22:00", ``--not-before``); ``reason`` names the time and
``patchpilot resume RUN_ID`` continues the run once it has come. ``plan.unmatched_only`` lists
``--only`` names that matched no pending update (by binary or source name), ``plan.suggestions``
says for each what to do (a question such as "zlib is the source of zlib1g: patch zlib1g?", or
that it is up to date) and ``plan.up_to_date`` those installed with no pending update. A run
whose ``--only`` names matched nothing and that has nothing to deploy ends ``failed`` (never a
silent ``completed``) with the suggestions in ``reason`` and ``hint``; one whose names are only
up to date ends ``completed`` and says so.

``deployments[].status`` is ``installed``, ``failed``, ``rolled_back``, ``skipped`` or
``pending``; every plan item has exactly one row. A host's ``compliance`` is the worst SSM state
of its items (``not-applicable`` for a reached host with no plan item); a host the run could not
reach (``unreachable``: at discovery or during the compatibility test) is ``unknown``, never
``not-applicable``.

``analysis`` has one entry per ring whose post-patch analysis ran (``policy.analysis``), in
ring order: the judge's verdict and score, what the canary was compared with, and each
metric's evidence (``baseline`` / ``canary`` summaries: ``n``, ``median``, ``mean``, ``p95``,
...; Mann-Whitney ``statistic`` and ``p_value``; ``effect_size``; ``classification``: ``Pass``,
``High``, ``Low``, ``Nodata``, ``NodataFailMetric``). A ring whose analysis failed (or that a
person rolled back) has ``action: "rolled_back"``; its hosts' deployments are ``rolled_back``
with a ``reason`` starting ``analysis failed`` that names the failing metrics.

The document's model is :class:`patchpilot.app.documents.RunDocument`; its JSON Schema is
committed as ``schemas/patchpilot.run.v1.json`` and checked against what this module emits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.plan import ComplianceState, ExclusionReason, PatchPlan, compliance_state
from patchpilot.core.store import ApprovalRecord, DeploymentRecord
from patchpilot.graphs.run import RunResult, RunSnapshot, deployable_items, unreached_hosts

__all__ = [
    "RUN_EXIT",
    "SCHEMA",
    "deployment_rows",
    "host_compliance",
    "run_document",
    "run_exit_code",
]

SCHEMA = "patchpilot.run/v1"

RUN_EXIT: dict[str, int] = {
    "completed": 0,
    "partial": 3,
    "awaiting_approval": 6,
    "halted": 7,
    "rejected": 8,
    "cancelled": 10,
    "failed": 1,
}
"""Exit code per run status (:mod:`patchpilot.cli.run` documents them)."""
_SOME_FAILED = 3
_NONE_REACHED = 4

_WORST_FIRST: tuple[ComplianceState, ...] = (
    ComplianceState.FAILED,
    ComplianceState.UNKNOWN,
    ComplianceState.INSTALLED_REJECTED,
    ComplianceState.MISSING,
    ComplianceState.INSTALLED_PENDING_REBOOT,
    ComplianceState.INSTALLED_OTHER,
    ComplianceState.INSTALLED,
    ComplianceState.NOT_APPLICABLE,
)


def _compliance(installed: str | None, target: str) -> str:
    try:
        return compliance_state(installed, target).value
    except InvalidVersionError:
        return ComplianceState.MISSING.value


def _pending_reason(status: str, waiting: str | None, reason: str | None) -> str:
    if waiting == "approval":
        return "waiting for approval"
    if waiting == "window":
        return f"waiting for the maintenance window ({reason})"
    if status == "rejected":
        return f"not deployed: {reason}"
    if status == "halted":
        return f"not started: {reason}"
    return "not deployed"


def deployment_rows(
    plan: PatchPlan | None,
    snapshot: RunSnapshot | None,
    records: Sequence[DeploymentRecord],
    *,
    status: str,
    waiting: str | None,
    reason: str | None,
) -> list[dict[str, Any]]:
    """One row per plan item: what happened to it (see the module docstring)."""
    if plan is None:
        return []
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record.result is not None:
            for item in record.result.get("items", []):
                rows[(item["host"], item["package"])] = {
                    "host": item["host"],
                    "package": item["package"],
                    "from": item["from_version"],
                    "to": item["to_version"],
                    "status": item["status"],
                    "reason": item["reason"],
                    "ring": record.ring,
                    "compliance": item["compliance"],
                }
        else:
            for item in record.items:
                rows[(item["host"], item["package"])] = {
                    "host": item["host"],
                    "package": item["package"],
                    "from": item["from_version"],
                    "to": item["to_version"],
                    "status": "pending",
                    "reason": "interrupted while in flight: `patchpilot resume` inspects the host",
                    "ring": record.ring,
                    "compliance": _compliance(item["from_version"], item["to_version"]),
                }
    state = snapshot.state if snapshot else None
    approved = bool(state and state.approval and state.approval.status == "approved")
    _deploy, skipped = deployable_items(plan, state.testing if state else None, approved)
    ring_of = {h: r.name for r in (state.rings if state else []) for h in r.hosts}
    unreached = unreached_hosts(state) if state else {}
    out: list[dict[str, Any]] = []
    for item in plan.items:
        row = rows.get(item.key)
        if row is None:
            why = skipped.get(item.key)
            row = {
                "host": item.host,
                "package": item.package,
                "from": item.from_version,
                "to": item.to_version,
                "status": "skipped" if why else "pending",
                "reason": why or _pending_reason(status, waiting, reason),
                "ring": ring_of.get(item.host),
                "compliance": ComplianceState.UNKNOWN.value
                if item.host in unreached
                else _compliance(item.from_version, item.to_version),
            }
        out.append(row)
    return out


def _held_rows(snapshot: RunSnapshot | None) -> list[dict[str, Any]]:
    """Held packages the run would have patched: ``missing`` for the host's compliance.

    A hold keeps a known fix off the host, so the host is not compliant, although nothing is
    deployed for it (the plan excludes it, ``held``, with the reason).
    """
    plan = snapshot.state.plan if snapshot is not None else None
    if plan is None:
        return []
    return [
        {"host": e.host, "compliance": ComplianceState.MISSING.value}
        for e in plan.excluded
        if e.exclusion is ExclusionReason.HELD
    ]


def host_compliance(
    hosts: Iterable[str], rows: Sequence[Mapping[str, Any]], unknown: Iterable[str] = ()
) -> dict[str, str]:
    """The worst compliance state of each host's items (``not-applicable`` without items).

    Hosts in ``unknown`` (not reached) are ``unknown`` whatever their rows say.
    """
    states: dict[str, set[str]] = {h: set() for h in hosts}
    for row in rows:
        states.setdefault(row["host"], set()).add(row["compliance"])
    not_reached = set(unknown)
    result: dict[str, str] = {}
    for host, found in states.items():
        if host in not_reached:
            result[host] = ComplianceState.UNKNOWN.value
            continue
        worst = next((s.value for s in _WORST_FIRST if s.value in found), None)
        result[host] = worst or ComplianceState.NOT_APPLICABLE.value
    return result


def _hint(result: RunResult, snapshot: RunSnapshot | None, unreached: Sequence[str]) -> str | None:
    if result.waiting == "approval":
        return (
            f"approve with `patchpilot approve {result.run_id} --comment '...'` or reject with "
            f"`patchpilot reject {result.run_id}`"
        )
    if result.waiting == "window":
        if result.interrupt is not None and result.interrupt.get("not_before"):
            return (
                f"continue with `patchpilot resume {result.run_id}` once it is "
                f"{result.interrupt['not_before']} or later (and the window is open)"
            )
        return f"continue with `patchpilot resume {result.run_id}` once the window is open"
    plan = snapshot.state.plan if snapshot is not None else None
    unknown = [u for u in plan.unmatched_only if u not in plan.up_to_date] if plan else []
    if plan is not None and not plan.items and unknown:
        asked = [plan.suggestions.get(u, f"no pending update matches {u}") for u in unknown]
        return "--only matched nothing: " + "; ".join(asked)
    finished = snapshot is not None and not snapshot.next and not snapshot.interrupts
    if result.status == "failed" and not finished:
        return f"after fixing the cause, `patchpilot resume {result.run_id}` continues the run"
    if unreached and result.status in ("failed", "partial"):
        return (
            f"{', '.join(unreached)} could not be reached (network, sshd, host key or login): "
            "fix that, then start a new run for them"
        )
    return None


def _approval_json(record: ApprovalRecord | None, reasons: Sequence[str]) -> dict[str, Any]:
    shown = list(reasons) or (list(record.reasons) if record is not None else [])
    doc: dict[str, Any] = {"required": bool(shown), "reasons": shown}
    if record is not None:
        doc |= {
            "status": record.status,
            "plan_id": record.plan_id,
            "content_hash": record.content_hash,
            "requested_at": record.requested_at.isoformat(),
            "expires_at": record.expires_at.isoformat(),
            "decided_at": record.decided_at.isoformat() if record.decided_at else None,
            "decided_by": record.decided_by,
            "comment": record.comment,
            "decided_via": record.decided_via,
            "decided_words": record.decided_words,
        }
    return doc


def _plan_json(snapshot: RunSnapshot) -> dict[str, Any] | None:
    state = snapshot.state
    plan = state.plan
    if plan is None:
        return None
    testing = state.testing
    items = []
    for item in plan.items:
        entry: dict[str, Any] = {
            "host": item.host,
            "package": item.package,
            "from": item.from_version,
            "to": item.to_version,
            "origin": item.origin.value,
            "security": item.security,
            "cves": list(item.cves),
            "rule": item.rule,
            "reason": item.reason,
        }
        if testing is not None:
            try:
                p = testing.item(item.host, item.package)
            except KeyError:
                p = None
            if p is not None:
                entry["test"] = {
                    "status": p.status.value,
                    "risk": p.risk.value,
                    "classifications": [c.value for c in p.classifications],
                    "reasons": list(p.reasons),
                    "recalled": state.recalled.get(f"{item.package}={item.to_version}", []),
                    "llm": state.judgments.get(f"{item.host}|{item.package}"),
                }
        items.append(entry)
    return {
        "plan_id": plan.plan_id,
        "content_hash": plan.content_hash,
        "created_at": plan.created_at.isoformat(),
        "items": items,
        "excluded": [
            {
                "host": e.host,
                "package": e.package,
                "to": e.to_version,
                "exclusion": e.exclusion.value,
                "reason": e.reason,
            }
            for e in plan.excluded
        ],
        "unmatched_only": list(plan.unmatched_only),
        "suggestions": dict(plan.suggestions),
        "up_to_date": list(plan.up_to_date),
    }


def run_document(
    result: RunResult,
    snapshot: RunSnapshot | None,
    records: Sequence[DeploymentRecord],
    approval: ApprovalRecord | None,
) -> dict[str, Any]:
    """The run document (see the module docstring)."""
    state = snapshot.state if snapshot else None
    plan = state.plan if state else None
    rows = deployment_rows(
        plan, snapshot, records, status=result.status, waiting=result.waiting, reason=result.reason
    )
    hosts = [h.name for h in state.hosts] if state else []
    unreached = unreached_hosts(state) if state else {}
    rings = []
    if state is not None:
        done = {r.ring: r for r in state.ring_results}
        for ring in state.rings:
            summary = done.get(ring.name)
            rings.append(
                {
                    "name": ring.name,
                    "hosts": list(ring.hosts),
                    "status": "empty"
                    if not ring.hosts
                    else "not-started"
                    if summary is None
                    else ("halted" if summary.halted else "done"),
                    "reason": summary.reason if summary else None,
                    "rejected": list(summary.rejected) if summary else [],
                }
            )
    return {
        "schema": SCHEMA,
        "run_id": result.run_id,
        "status": result.status,
        "reason": result.reason,
        "waiting": result.waiting,
        "hint": _hint(result, snapshot, list(unreached)),
        "dry_run": state.dry_run if state else None,
        "target": state.target if state else None,
        "hosts": hosts,
        "plan": _plan_json(snapshot) if snapshot else None,
        "not_before": state.not_before.isoformat() if state and state.not_before else None,
        "trigger": state.trigger if state else None,
        "schedule_id": state.schedule_id if state else None,
        "window_end": state.window_end.isoformat() if state and state.window_end else None,
        "cutoff_at": state.cutoff_at.isoformat() if state and state.cutoff_at else None,
        "approval": _approval_json(approval, state.approval_reasons if state else []),
        "window": state.window.model_dump(mode="json") if state and state.window else None,
        "rings": rings,
        "deployments": rows,
        "unreachable": [{"host": h, "error": e} for h, e in unreached.items()],
        "compliance": host_compliance(hosts, [*rows, *_held_rows(snapshot)], unreached),
        "assistance": list(state.assistance) if state else [],
        "analysis": [a.document() for a in state.analyses] if state else [],
    }


def run_exit_code(document: Mapping[str, Any]) -> int:
    """The exit code of a run document: :data:`RUN_EXIT` of its status, except

    * ``failed`` because no targeted host could be reached: 4 (as ``scan``);
    * ``completed`` with items that failed or were rolled back: 3.
    """
    status = document["status"]
    code = RUN_EXIT[status]
    unreachable = {u["host"] for u in document.get("unreachable", [])}
    if status == "failed" and document["hosts"] and unreachable >= set(document["hosts"]):
        code = _NONE_REACHED
    if status == "completed" and any(
        d["status"] in ("failed", "rolled_back") for d in document["deployments"]
    ):
        code = _SOME_FAILED
    return code
