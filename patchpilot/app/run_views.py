"""What the API and the web dashboard show of runs and approvals, and the decisions they take.

Both interfaces (:mod:`patchpilot.api.routes` and :mod:`patchpilot.web.pages_runs`) call these
functions, so a run document, who requested a run, a decision (with its refusal of
self-approval) and a chat request are one implementation:

- :func:`run_document`: the run document of any run id (``patchpilot.run/v1`` of a patch run,
  a scan's report, ``{status: queued}`` before the store knows it).
- :func:`requested_by`: who started a run (the approval's or run's record, else its first audit
  event).
- :func:`decide_as`: an authenticated person's approval or rejection, refused for roles
  without ``decide``, for the requester (audit-logged ``approval.refused``) and when decided
  already (:class:`~patchpilot.core.errors.AlreadyDecidedError`); the run then continues
  through the service's executor.
- :func:`ask_as`: one chat request as an authenticated person (changes need ``start``,
  decisions ``decide``: :class:`~patchpilot.core.errors.NotAuthorizedError` otherwise).
- :func:`run_rows`, :func:`run_view`, :func:`approval_view`: the dashboard's read models (lists
  with trigger, requester and duration; a run's hosts with health checks, rollbacks, waves and
  audit trail; an approval's frozen plan, changes per host, risk, blast radius and memory).

Everything returned is plain data (untrusted strings included verbatim); escaping is the
interfaces' job (JSON, or autoescaped templates).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import structlog

from patchpilot.app.approvals import DecisionSource, decide, record_decision
from patchpilot.core.audit import AuditError, AuditLog, read_events
from patchpilot.core.auth import Action, Principal, allowed
from patchpilot.core.errors import (
    AlreadyDecidedError,
    NotAuthorizedError,
    PatchpilotError,
    SelfApprovalError,
    StoreError,
    UnknownTargetError,
)
from patchpilot.core.intents import RUN_ID_RE
from patchpilot.core.models import utcnow
from patchpilot.core.settings import Settings
from patchpilot.core.store import ApprovalRecord, RunRecord, Store
from patchpilot.core.text import bounded, inert

if TYPE_CHECKING:
    from patchpilot.app.chat import ChangeOrder, ChatAnswer
    from patchpilot.app.executor import RunRequest

__all__ = [
    "ACTIVE",
    "MAX_ASK_LENGTH",
    "MAX_RUNS",
    "Continuer",
    "Recall",
    "approval_json",
    "approval_rows",
    "approval_view",
    "ask_as",
    "decide_as",
    "first_actors",
    "requested_by",
    "run_document",
    "run_rows",
    "run_view",
]

log = structlog.get_logger(__name__)

ACTIVE: Final = frozenset({"queued", "running", "pending"})
"""Run statuses of a run still in flight (anything else ended or waits for a person)."""
MAX_RUNS: Final = 10_000
"""Most runs a list reads from the store (as ``GET /api/v1/runs``)."""
MAX_ASK_LENGTH: Final = 4000
"""Longest chat request accepted (the chat itself reads at most 2,000 characters)."""


class Submitter(Protocol):
    """What a chat change needs of the service's executor: queueing a run."""

    def submit_run(
        self, request: RunRequest, *, actor: str, trigger: Literal["api", "chat"]
    ) -> str: ...


class Continuer(Protocol):
    """What a decision needs of the service's executor: continuing a decided run."""

    def continue_run(self, run_id: str, *, actor: str) -> object: ...


Recall = Callable[[str, str, int], list[dict[str, Any]]]
"""``(query, package, k) -> recalled outcomes and incidents of package`` (JSON form of the
memory's :class:`~patchpilot.tools.memory.records.Recalled`)."""


# --------------------------------------------------------------------------- documents


def run_document(
    settings: Settings, store: Store, run_id: str, *, submitted: Collection[str] = ()
) -> dict[str, Any] | None:
    """The document of ``run_id``: a patch run's ``patchpilot.run/v1`` (as ``run --format
    json``), a scan's report, ``{run_id, status: queued}`` before it starts (``submitted``: run
    ids this process queued); None: unknown."""
    from patchpilot.app import runs, scans

    record = store.get_run(run_id)
    if record is None:
        if run_id in submitted:
            return {"schema": "patchpilot.run/v1", "run_id": run_id, "status": "queued"}
        return None
    if record.kind == "run":
        document = runs.report(settings, store, run_id)
        if document is not None:
            if record.status in ACTIVE | {"cancelled"} and document["status"] != record.status:
                # in flight (or cancelled): the checkpoint alone reads as "stopped before X"
                document["status"] = record.status
                document["reason"] = None
            return document
        return {
            "schema": "patchpilot.run/v1",
            "run_id": run_id,
            "status": record.status,
            "kind": record.kind,
            "target": record.target,
            "params": record.params,
            "deployments": [],
        }
    document = scans.report(store, run_id).document
    return {
        **document,
        "run_id": run_id,
        "status": record.status,
        "kind": record.kind,
        "trigger": record.params.get("trigger"),
        "schedule_id": record.params.get("schedule_id"),
    }


def requested_by(
    settings: Settings,
    store: Store,
    run_id: str,
    record: ApprovalRecord | None = None,
    actors: dict[str, str] | None = None,
) -> str | None:
    """Who started ``run_id``: the approval's or run's record, else its first audit event
    (``actors``: run id -> first actor, read once for a whole list by :func:`first_actors`)."""
    found = getattr(record, "requested_by", None) if record is not None else None
    if isinstance(found, str) and found:
        return found
    run = store.get_run(run_id)
    if run is not None:
        for key in ("requested_by", "actor"):
            value = run.params.get(key)
            if isinstance(value, str) and value:
                return value
    if actors is not None:
        return actors.get(run_id)
    for event in read_events(settings, run_id=run_id):
        return event.actor
    return None


def first_actors(settings: Settings, run_ids: Collection[str]) -> dict[str, str]:
    """Run id -> the actor of its first audit event, for ``run_ids`` (one read of the log)."""
    first: dict[str, str] = {}
    if not run_ids:
        return first
    for event in read_events(settings):
        run_id = event.run_id
        if run_id is not None and run_id in run_ids and run_id not in first:
            first[run_id] = event.actor
    return first


def approval_json(
    settings: Settings,
    store: Store,
    record: ApprovalRecord,
    actors: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An approval's JSON form with ``requested_by`` and ``expired`` (as ``GET /approvals``)."""
    data = record.model_dump(mode="json")
    data["requested_by"] = requested_by(settings, store, record.run_id, record, actors)
    data["expired"] = record.expired_at(utcnow())
    return data


def approval_rows(
    settings: Settings, store: Store, *, include_decided: bool = False
) -> list[dict[str, Any]]:
    """Pending approvals (``include_decided``: decided and expired ones too), each as
    :func:`approval_json` plus ``packages`` (``NAME FROM -> TO``) and ``hosts`` of its plan."""
    records = store.approvals(None if include_decided else "pending")
    actors = first_actors(settings, {r.run_id for r in records})
    rows = []
    for record in records:
        items = [i for i in record.payload.get("items") or () if isinstance(i, dict)]
        changes = sorted({(str(i.get("package")), i.get("from"), str(i.get("to"))) for i in items})
        rows.append(
            {
                **approval_json(settings, store, record, actors),
                "changes": [{"package": p, "from": f, "to": t} for p, f, t in changes],
                "hosts": sorted({str(i.get("host")) for i in items}),
            }
        )
    return rows


# --------------------------------------------------------------------------- decisions


def decide_as(
    settings: Settings,
    store: Store,
    who: Principal,
    run_id: str,
    status: Literal["approved", "rejected"],
    *,
    comment: str | None,
    via: Literal["api", "web"],
    words: str,
    executor: Continuer | None,
) -> ApprovalRecord:
    """``who`` approves or rejects ``run_id``; the executor then continues the run.

    The refusals come before anything changes: a role without ``decide``, the requester
    (audit-logged ``approval.refused`` with ``via``), an approval decided already; then
    :func:`patchpilot.app.approvals.record_decision` checks the run's policy. ``words``: what
    the person did, recorded with the decision (e.g. ``POST /api/v1/approvals/RUN/approve``).

    Returns:
        The approval as recorded (still ``pending`` when this was one vote of several).

    Raises:
        UnknownTargetError: not a run id, or no approval for it.
        NotAuthorizedError: the role may not decide, or the run's policy refuses ``who``.
        SelfApprovalError: ``who`` requested the run.
        AlreadyDecidedError: decided already (or ``who`` voted already).
        InvalidInputError: the comment is too long or carries control characters.
    """
    if not RUN_ID_RE.fullmatch(run_id):
        raise UnknownTargetError("no such run (not a run id)", key="run_id")
    if not allowed(who.role, Action.DECIDE):
        raise NotAuthorizedError(f"role {who.role.value} may not {Action.DECIDE.value}")
    record = store.approval(run_id)
    if record is None:
        raise UnknownTargetError(f"no approval for run {run_id}", key="run_id")
    if record.status != "pending":
        raise AlreadyDecidedError(
            f"run {run_id} was already {record.status} by "
            f"{inert(record.decided_by or '?', newlines=False)} at {record.decided_at}"
        )
    if requested_by(settings, store, run_id, record) == who.name:
        AuditLog.for_settings(settings, run_id=run_id, actor=who.name).record(
            "approval.refused", details={"reason": "self-approval", "via": via}
        )
        raise SelfApprovalError(f"{who.name} requested run {run_id} and may not decide it")
    try:
        decided = record_decision(
            settings,
            store,
            run_id,
            status,
            comment=comment,
            source=DecisionSource(parser="api", words=words),
            actor=who.name,
        )
    except AlreadyDecidedError:
        raise
    except StoreError as exc:  # decided by someone else in the meantime
        raise AlreadyDecidedError(str(exc)) from exc
    if decided.status != "pending" and executor is not None:
        executor.continue_run(run_id, actor=who.name)
    log.info("run_views.decided", run_id=run_id, actor=who.name, status=decided.status, via=via)
    return decided


# --------------------------------------------------------------------------- chat


def ask_as(
    settings: Settings,
    store: Store,
    who: Principal,
    text: str,
    *,
    inventory: Path,
    policy: Path,
    executor: Submitter | None = None,
) -> ChatAnswer:
    """One chat request as ``who``: a question is answered from the facts; a change request
    starts a run that waits for approval (needs ``start``); a decision needs ``decide``.
    With the service's ``executor`` a change is queued there (``trigger: chat``) and the answer
    says so at once (status ``queued``): the request's thread never drives a run.

    Raises:
        InvalidInputError: ``text`` is over :data:`MAX_ASK_LENGTH` or has control characters.
        NotAuthorizedError: the request needs a role ``who`` does not have (nothing started).
    """
    from patchpilot.app.chat import Orchestrator
    from patchpilot.app.contexts import run_context
    from patchpilot.core.inventory import load_inventory
    from patchpilot.core.policy import Policy, load_policy
    from patchpilot.graphs.run import RunContext, RunResult

    text = bounded(text, what="text", max_length=MAX_ASK_LENGTH, newlines=False)
    refused: list[str] = []  # the orchestrator answers errors in words: refuse them here

    def make_context(frozen: Policy) -> RunContext:
        if not allowed(who.role, Action.START):
            refused.append(f"role {who.role.value} may not start runs")
            raise NotAuthorizedError(refused[-1])
        return run_context(settings, store, frozen, actor=who.name)

    def decider(*args: Any, **kwargs: Any) -> RunResult:
        if not allowed(who.role, Action.DECIDE):
            refused.append(f"role {who.role.value} may not decide approvals")
            raise NotAuthorizedError(refused[-1])
        kwargs["actor"] = who.name
        return decide(*args, **kwargs)

    def submit(order: ChangeOrder) -> str:
        from patchpilot.app.executor import chat_run_request

        if not allowed(who.role, Action.START):
            refused.append(f"role {who.role.value} may not start runs")
            raise NotAuthorizedError(refused[-1])
        assert executor is not None
        return executor.submit_run(chat_run_request(order), actor=who.name, trigger="chat")

    orchestrator = Orchestrator(
        settings=settings,
        store=store,
        inventory=load_inventory(inventory, ssh=settings.ssh),
        policy=load_policy(policy),
        make_context=make_context,
        actor=who.name,
        decider=decider,
        submit=submit if executor is not None else None,
    )
    answer = orchestrator.handle(text)
    if refused:
        raise NotAuthorizedError(refused[0])
    log.info("run_views.asked", actor=who.name, intent=answer.request.intent.value)
    return answer


# --------------------------------------------------------------------------- dashboard views


def _duration_s(record: RunRecord, now: datetime) -> float | None:
    end = record.finished_at
    if end is None:
        if record.status not in ACTIVE:
            return None
        end = now
    return max(0.0, (end - record.started_at).total_seconds())


def run_rows(
    settings: Settings,
    store: Store,
    *,
    status: str | None = None,
    kind: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """One page of runs, newest first, and how many match: each with ``run_id``, ``kind``,
    ``target``, ``status``, ``trigger`` (cli, api, chat, schedule), ``requested_by``,
    ``schedule_id``, ``started_at``, ``finished_at`` and ``duration_s``."""
    records = store.list_runs(limit=MAX_RUNS)
    if status:
        records = [r for r in records if r.status == status]
    if kind:
        records = [r for r in records if r.kind == kind]
    total = len(records)
    page = records[offset : offset + limit]
    unknown = {r.run_id for r in page if not _named_requester(r)}
    actors = first_actors(settings, unknown)
    now = utcnow()
    rows = [
        {
            "run_id": r.run_id,
            "kind": r.kind,
            "target": r.target,
            "status": r.status,
            "trigger": r.params.get("trigger") or "cli",
            "schedule_id": r.params.get("schedule_id"),
            "requested_by": _named_requester(r) or actors.get(r.run_id),
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "duration_s": _duration_s(r, now),
            "active": r.status in ACTIVE,
        }
        for r in page
    ]
    return rows, total


def _named_requester(record: RunRecord) -> str | None:
    for key in ("requested_by", "actor"):
        value = record.params.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _checks(results: Iterable[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [
        {
            "kind": r.get("kind"),
            "target": r.get("target"),
            "ok": bool(r.get("ok")),
            "detail": r.get("detail") or "",
            "attempts": r.get("attempts"),
        }
        for r in results or ()
    ]


def _host_details(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Per host of a patch run: ring, state, timing, health checks before/after (and after a
    rollback), the install and rollback outcome, services restarted, reboot."""
    out: list[dict[str, Any]] = []
    for record in store.deployments(run_id):
        result = record.result or {}
        rollback = result.get("rollback") or None
        install = result.get("install") or None
        out.append(
            {
                "host": record.host,
                "ring": record.ring,
                "state": record.state,
                "started_at": record.started_at,
                "finished_at": record.finished_at,
                "duration_s": result.get("duration_s"),
                "reason": result.get("reason"),
                "health_before": _checks(result.get("health_before")),
                "health_after": _checks(result.get("health_after")),
                "health_after_rollback": _checks(result.get("health_after_rollback")),
                "install": {
                    "ok": install.get("ok"),
                    "reason": install.get("reason"),
                    "requested": list(install.get("requested") or ()),
                }
                if install
                else None,
                "rollback": {
                    "ok": rollback.get("ok"),
                    "reason": rollback.get("reason"),
                    "requested": list(rollback.get("requested") or ()),
                }
                if rollback
                else None,
                "restarts": [
                    {"service": s.get("service"), "ok": bool(s.get("ok"))}
                    for s in result.get("restarts") or ()
                ],
                "reboot_required": bool(result.get("reboot_required")),
                "reboot_note": result.get("reboot_note"),
            }
        )
    return out


def _audit(settings: Settings, run_id: str) -> tuple[list[dict[str, Any]], str | None]:
    try:
        events = read_events(settings, run_id=run_id)
    except AuditError as exc:
        return [], str(exc)
    return [e.model_dump() for e in events], None


def _waves(events: Iterable[dict[str, Any]]) -> dict[str, list[list[str]]]:
    """Ring name -> its waves (host names), from the ``ring.started`` audit events."""
    found: dict[str, list[list[str]]] = {}
    for event in events:
        if event["action"] != "ring.started":
            continue
        details = event.get("details") or {}
        ring, waves = details.get("ring"), details.get("waves")
        if isinstance(ring, str) and isinstance(waves, list):
            found[ring] = [[str(h) for h in wave] for wave in waves if isinstance(wave, list)]
    return found


def run_view(
    settings: Settings, store: Store, run_id: str, *, submitted: Collection[str] = ()
) -> dict[str, Any] | None:
    """What the dashboard shows of a run (None: unknown run).

    ``document`` (:func:`run_document`), ``record`` (the store's run or None), ``trigger``,
    ``requested_by``, ``active``, ``timeline`` (rings, each with its waves and per-host
    status), ``hosts`` (:func:`_host_details`), ``rollbacks`` (rows rolled back, with their
    reason), ``audit`` (the run's audit events), ``audit_error``, ``analysis`` (the document's,
    if any).

    Raises:
        UnknownTargetError: not a run id (nothing was looked up).
    """
    if not RUN_ID_RE.fullmatch(run_id):
        raise UnknownTargetError("no such run (not a run id)", key="run_id")
    document = run_document(settings, store, run_id, submitted=submitted)
    if document is None:
        return None
    record = store.get_run(run_id)
    events, audit_error = _audit(settings, run_id)
    waves = _waves(events)
    deployments = [d for d in document.get("deployments") or () if isinstance(d, dict)]
    host_status: dict[str, str] = {}
    order = ("failed", "rolled_back", "pending", "installed", "skipped")
    for row in deployments:
        current = host_status.get(row["host"])
        if current is None or order.index(row["status"]) < order.index(current):
            host_status[row["host"]] = row["status"]
    timeline = []
    for ring in document.get("rings") or ():
        ring_waves = waves.get(ring["name"]) or ([list(ring["hosts"])] if ring["hosts"] else [])
        timeline.append(
            {
                **ring,
                "waves": [
                    [{"host": h, "status": host_status.get(h, "not-started")} for h in wave]
                    for wave in ring_waves
                ],
            }
        )
    status = str(document.get("status"))
    actor = None
    if record is not None:
        actor = _named_requester(record)
    if actor is None:
        actor = next((e["actor"] for e in events), None)
    return {
        "run_id": run_id,
        "document": document,
        "record": record,
        "kind": record.kind if record is not None else document.get("kind", "run"),
        "status": status,
        "trigger": document.get("trigger")
        or (record.params.get("trigger") if record is not None else None)
        or "cli",
        "requested_by": actor,
        # decided but not yet continued by the executor: it goes on any moment (live too)
        "active": status in ACTIVE
        or (
            status == "awaiting_approval"
            and (document.get("approval") or {}).get("status") in ("approved", "rejected")
        ),
        "duration_s": _duration_s(record, utcnow()) if record is not None else None,
        "timeline": timeline,
        "deployments": deployments,
        "hosts": _host_details(store, run_id),
        "rollbacks": [d for d in deployments if d.get("status") == "rolled_back"],
        "audit": events,
        "audit_error": audit_error,
        "analysis": document.get("analysis"),
    }


def approval_view(
    settings: Settings, store: Store, run_id: str, *, recall: Recall | None = None
) -> dict[str, Any] | None:
    """What an approver needs to decide ``run_id`` (None: no approval for it).

    ``approval`` (:func:`approval_json`), ``plan`` (frozen plan: id, content hash, items with
    their test and risk), ``changes`` (per host: from → to, new and removed packages, services
    restarted, reboot, the apt simulation's status, warnings), ``risk`` (highest item risk),
    ``blast`` (hosts, rings with hosts, tags), ``memory`` (past outcomes and incidents per
    package: ``[{package, items}]``, ``memory_error``), ``target``, ``reasons`` (why a person
    must decide), ``document`` (the run document).

    Raises:
        UnknownTargetError: not a run id (nothing was looked up).
    """
    from patchpilot.graphs.run import load_run_state

    if not RUN_ID_RE.fullmatch(run_id):
        raise UnknownTargetError("no such run (not a run id)", key="run_id")
    record = store.approval(run_id)
    if record is None:
        return None
    approval = approval_json(settings, store, record)
    document = run_document(settings, store, run_id) or {}
    plan = document.get("plan") or {}
    snapshot = load_run_state(run_id, settings)
    state = snapshot.state if snapshot is not None else None
    testing = state.testing if state is not None else None
    items = list(plan.get("items") or ())
    by_host: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_host.setdefault(item["host"], []).append(item)
    predictions = {h.host: h for h in testing.hosts} if testing is not None else {}
    changes = []
    for host in sorted(set(by_host) | set(predictions)):
        p = predictions.get(host)
        changes.append(
            {
                "host": host,
                "items": by_host.get(host, []),
                "simulation": p.status if p is not None else None,
                "error": p.error if p is not None else None,
                "new_packages": list(p.new_packages) if p is not None else [],
                "removals": list(p.removals) if p is not None else [],
                "held": list(p.held) if p is not None else [],
                "services": list(p.services) if p is not None else [],
                "reboot": bool(p is not None and p.effects.reboot),
                "reboot_packages": list(p.reboot_packages) if p is not None else [],
                "extra_changes": [c.model_dump(mode="json") for c in p.extra_changes]
                if p is not None
                else [],
                "warnings": list(p.warnings) if p is not None else [],
                "risk": p.risk.value if p is not None else None,
            }
        )
    rank = {"low": 0, "medium": 1, "high": 2}
    risks = [str(i["test"]["risk"]) for i in items if i.get("test")]
    risk = max(risks, key=lambda r: rank.get(r, 0)) if risks else None
    hosts = sorted(by_host)
    rings = [
        {"name": r["name"], "hosts": [h for h in r["hosts"] if h in by_host]}
        for r in document.get("rings") or ()
    ]
    tags = sorted({t for h in (state.hosts if state else []) if h.name in by_host for t in h.tags})
    memory: list[dict[str, Any]] = []
    memory_error = None
    if recall is not None:
        for package, to in sorted({(i["package"], i["to"]) for i in items}):
            try:
                found = recall(f"{package} {to} upgrade outcome incident", package, 5)
            except PatchpilotError as exc:
                memory_error = str(exc)
                break
            memory.append({"package": package, "to": to, "items": found})
    return {
        "run_id": run_id,
        "approval": approval,
        "pending": record.status == "pending" and not approval["expired"],
        "plan": {
            "plan_id": plan.get("plan_id", record.plan_id),
            "content_hash": plan.get("content_hash", record.content_hash),
            "created_at": plan.get("created_at"),
            "items": items,
            "excluded": list(plan.get("excluded") or ()),
        },
        "content_hash_matches": plan.get("content_hash", record.content_hash)
        == record.content_hash,
        "changes": changes,
        "tested_at": testing.tested_at if testing is not None else None,
        "risk": risk,
        "blast": {"hosts": hosts, "rings": [r for r in rings if r["hosts"]], "tags": tags},
        "memory": memory,
        "memory_error": memory_error,
        "target": document.get("target"),
        "trigger": document.get("trigger"),
        "reasons": list(record.reasons),
        "document": document,
    }
