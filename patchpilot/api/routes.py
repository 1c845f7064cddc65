"""The routes of ``/api/v1`` (and ``/metrics``): each parses, checks the role, calls a use case.

The JSON documents are the CLI's: ``GET /runs/{run_id}`` is what ``patchpilot run --format
json`` prints (``patchpilot.run/v1``), ``GET /findings`` what ``patchpilot findings --format
json`` prints, ``GET /runs`` and ``GET /approvals`` what ``runs``/``approvals --format json``
print. Runs never execute in a request: ``POST /runs`` and a decision hand the work to the
executor and answer at once (202). A route's synchronous body runs in the server's thread
pool; the store opens one SQLite connection per thread.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final, Literal

import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from patchpilot.api.app import ApiState, principal, require, state_of
from patchpilot.api.models import AskBody, DecisionBody, RunCreate
from patchpilot.app import run_views
from patchpilot.app.executor import RunRequest
from patchpilot.core.audit import AuditLog, read_events
from patchpilot.core.auth import Action, Principal, allowed
from patchpilot.core.errors import AlreadyDecidedError, StoreError
from patchpilot.core.intents import RUN_ID_RE
from patchpilot.core.models import FixStatus, Severity, utcnow
from patchpilot.core.store import ApprovalRecord

__all__ = ["metrics_router", "router"]

log = structlog.get_logger(__name__)

router = APIRouter()
metrics_router = APIRouter()

ACTIVE: Final = frozenset({"queued", "running", "pending"})
"""Run statuses ``/wait`` keeps waiting on (anything else: the run ended or waits for a
person or a window)."""
MAX_LIST: Final = 10_000
MAX_QUERY: Final = 1000

Api = Annotated[ApiState, Depends(state_of)]
Reader = Annotated[Principal, Depends(require(Action.READ))]
Starter = Annotated[Principal, Depends(require(Action.START))]
Canceller = Annotated[Principal, Depends(require(Action.CANCEL))]
Decider = Annotated[Principal, Depends(require(Action.DECIDE))]
Scheduler = Annotated[Principal, Depends(require(Action.SCHEDULE))]
RunId = Annotated[str, Path(description="a run id, e.g. 20261206T084313Z-0a1b2c")]


def _run_id(run_id: str) -> str:
    """``run_id`` if it is a run id (else 404, before anything is looked up)."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise HTTPException(status_code=404, detail="no such run (not a run id)")
    return run_id


def _executor(api: ApiState) -> Any:
    if api.executor is None:
        raise HTTPException(status_code=503, detail="this service has no run executor")
    return api.executor


def run_document(api: ApiState, run_id: str) -> dict[str, Any] | None:
    """The document of ``run_id`` (:func:`patchpilot.app.run_views.run_document`)."""
    return run_views.run_document(api.settings, api.store, run_id, submitted=api.submitted)


def _document_or_404(api: ApiState, run_id: str) -> dict[str, Any]:
    document = run_document(api, _run_id(run_id))
    if document is None:
        raise HTTPException(status_code=404, detail=f"no run {run_id}")
    return document


# --------------------------------------------------------------------------- health, metrics


@router.get("/health", tags=["service"])
def health(api: Api) -> dict[str, Any]:
    """Liveness and the store's schema version (no token)."""
    try:
        schema = api.store.schema_version
    except StoreError as exc:
        log.error("api.health.store_failed", error=str(exc))
        raise HTTPException(status_code=503, detail="the store is not usable") from exc
    return {"status": "ok", "version": _version(), "store_schema": schema}


def _version() -> str:
    from patchpilot import __version__

    return __version__


@metrics_router.get("/metrics", tags=["service"], response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text (:func:`patchpilot.app.metrics.render_metrics`)."""
    api = state_of(request)
    if not api.settings.service.metrics_public:
        who = principal(request, _credentials(request))
        if not allowed(who.role, Action.READ):
            raise HTTPException(status_code=403, detail=f"role {who.role.value} may not read")
    from patchpilot.app.metrics import render_metrics

    body, content_type = render_metrics(api.store)
    return Response(content=body, media_type=content_type)


def _credentials(request: Request) -> Any:
    from fastapi.security import HTTPAuthorizationCredentials
    from fastapi.security.utils import get_authorization_scheme_param

    scheme, value = get_authorization_scheme_param(request.headers.get("Authorization"))
    if not scheme or not value:
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=value)


# --------------------------------------------------------------------------- runs


@router.post("/runs", status_code=202, tags=["runs"])
def create_run(body: RunCreate, api: Api, who: Starter) -> dict[str, Any]:
    """Start a patch run (202: queued; the executor runs it). 409: a host is busy."""
    executor = _executor(api)
    request = _run_request(body)
    run_id = executor.submit_run(request, actor=who.name, trigger="api")
    api.submitted.add(run_id)
    log.info("api.run.submitted", run_id=run_id, actor=who.name)
    document = run_document(api, run_id)
    return document or {"schema": "patchpilot.run/v1", "run_id": run_id, "status": "queued"}


def _run_request(body: RunCreate) -> RunRequest:
    """The executor's request for ``body`` (validated again there: 422 if it refuses)."""
    try:
        return RunRequest(
            only=tuple(body.only or ()),
            limit=body.limit,
            target=body.target,
            dry_run=body.dry_run,
            security_only=body.security_only,
        )
    except ValidationError as exc:
        raise HTTPException(
            status_code=422,
            detail=[
                {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from exc


@router.get("/runs", tags=["runs"])
def list_runs(
    api: Api,
    who: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 20,
    kind: Annotated[Literal["scan", "run"] | None, Query()] = None,
) -> dict[str, Any]:
    """Runs, newest first (as ``patchpilot runs --format json``)."""
    records = api.store.list_runs(limit=limit if kind is None else MAX_LIST)
    if kind is not None:
        records = [r for r in records if r.kind == kind][:limit]
    return {"schema": "patchpilot.runs/v1", "runs": [r.model_dump(mode="json") for r in records]}


@router.get("/runs/{run_id}", tags=["runs"])
def get_run(run_id: RunId, api: Api, who: Reader) -> dict[str, Any]:
    """The run document, as ``patchpilot run --format json`` prints it."""
    return _document_or_404(api, run_id)


@router.get("/runs/{run_id}/wait", tags=["runs"])
async def wait_run(
    run_id: RunId,
    api: Api,
    who: Reader,
    timeout: Annotated[float, Query(ge=0, le=600, allow_inf_nan=False)] = 30.0,
) -> dict[str, Any]:
    """The run document once the run is no longer queued or running, or after ``timeout``
    seconds (at most ``service.max_wait``); ``waited_out`` says which."""
    _run_id(run_id)
    deadline = asyncio.get_running_loop().time() + min(timeout, api.settings.service.max_wait)
    while True:
        document = await run_in_threadpool(run_document, api, run_id)
        if document is None:
            raise HTTPException(status_code=404, detail=f"no run {run_id}")
        done = document.get("status") not in ACTIVE
        now = asyncio.get_running_loop().time()
        if done or now >= deadline:
            return {**document, "waited_out": not done}
        await asyncio.sleep(min(0.5, deadline - now))


@router.post("/runs/{run_id}/cancel", status_code=202, tags=["runs"])
def cancel_run(run_id: RunId, api: Api, who: Canceller) -> dict[str, Any]:
    """Cancel a run: a queued one never starts, one waiting for approval is rejected, one
    waiting for its window ends ``cancelled``; a running one stops before its next host starts
    (a host being installed finishes) and ends ``cancelled``, the hosts not started
    ``skipped``. ``cancel`` says which: ``cancelled``, ``rejected`` or ``cancelling``. 409: it
    has ended already."""
    _document_or_404(api, run_id)
    try:
        outcome = _executor(api).cancel(run_id, actor=who.name)
    except StoreError as exc:  # it has ended already
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    log.info("api.run.cancel_requested", run_id=run_id, actor=who.name, outcome=outcome)
    return {**_document_or_404(api, run_id), "cancel": outcome}


# --------------------------------------------------------------------------- approvals


def requested_by(
    api: ApiState,
    run_id: str,
    record: ApprovalRecord | None = None,
    first_actors: dict[str, str] | None = None,
) -> str | None:
    """Who started ``run_id`` (:func:`patchpilot.app.run_views.requested_by`)."""
    return run_views.requested_by(api.settings, api.store, run_id, record, first_actors)


def _first_actors(api: ApiState, run_ids: set[str]) -> dict[str, str]:
    """Run id -> the actor of its first audit event, for ``run_ids`` (one read of the log)."""
    return run_views.first_actors(api.settings, run_ids)


def _approval_json(
    api: ApiState, record: ApprovalRecord, first_actors: dict[str, str] | None = None
) -> dict[str, Any]:
    return run_views.approval_json(api.settings, api.store, record, first_actors)


@router.get("/approvals", tags=["approvals"])
def list_approvals(
    api: Api, who: Reader, all: Annotated[bool, Query(alias="all")] = False
) -> dict[str, Any]:
    """Pending approvals (``all=true``: decided and expired ones too), each with ``run_id``,
    ``requested_by`` and ``expires_at``."""
    records = api.store.approvals(None if all else "pending")
    first = _first_actors(api, {r.run_id for r in records}) if records else {}
    return {
        "schema": "patchpilot.approvals/v1",
        "approvals": [_approval_json(api, r, first) for r in records],
    }


def _decide(
    api: ApiState,
    who: Principal,
    run_id: str,
    status: Literal["approved", "rejected"],
    body: DecisionBody,
) -> dict[str, Any]:
    _run_id(run_id)
    verb = "approve" if status == "approved" else "reject"
    try:
        decided = run_views.decide_as(
            api.settings,
            api.store,
            who,
            run_id,
            status,
            comment=body.comment,
            via="api",
            words=f"POST /api/v1/approvals/{run_id}/{verb}",
            executor=api.executor,
        )
    except AlreadyDecidedError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    log.info("api.approval.decided", run_id=run_id, actor=who.name, status=decided.status)
    return {
        "schema": "patchpilot.decision/v1",
        "approval": _approval_json(api, decided),
        "run": run_document(api, run_id),
    }


@router.post("/approvals/{run_id}/approve", tags=["approvals"])
def approve(run_id: RunId, body: DecisionBody, api: Api, who: Decider) -> dict[str, Any]:
    """Approve a run's plan (403: your own run, or a role without ``decide``; 409: decided)."""
    return _decide(api, who, run_id, "approved", body)


@router.post("/approvals/{run_id}/reject", tags=["approvals"])
def reject(run_id: RunId, body: DecisionBody, api: Api, who: Decider) -> dict[str, Any]:
    """Reject a run's plan: nothing is deployed, the run ends ``rejected``."""
    return _decide(api, who, run_id, "rejected", body)


# --------------------------------------------------------------------------- findings, hosts


@router.get("/findings", tags=["findings"])
def findings(
    api: Api,
    who: Reader,
    host: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    severity: Severity | None = None,
    kev: bool | None = None,
    fix_state: FixStatus | None = None,
    actionable: bool = False,
    run: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Stored findings with the CLI's filters (as ``patchpilot findings --format json``)."""
    from patchpilot.app import acceptances, scans

    if run is not None and not RUN_ID_RE.fullmatch(run):
        raise HTTPException(status_code=404, detail="no such run (not a run id)")
    report = scans.findings(
        api.store,
        run_id=run,
        host=host,
        min_severity=severity,
        kev=kev,
        fix_status=fix_state,
        actionable=True if actionable else None,
        acceptances=acceptances.load(api.settings),
    )
    return report.document


def _hosts(api: ApiState) -> list[dict[str, Any]]:
    from patchpilot.app.report import host_json
    from patchpilot.tools.queries.common import ResolvedScope, latest_snapshots

    latest = latest_snapshots(api.store, ResolvedScope(names=None))
    return [
        {**host_json(result), "run_id": run_id} for _, (run_id, result) in sorted(latest.items())
    ]


@router.get("/hosts", tags=["hosts"])
def hosts(api: Api, who: Reader) -> dict[str, Any]:
    """Each host's latest facts and pending updates (its latest successful discovery)."""
    return {"schema": "patchpilot.hosts/v1", "hosts": _hosts(api)}


@router.get("/hosts/{name}", tags=["hosts"])
def host(
    name: Annotated[str, Path(min_length=1, max_length=255)], api: Api, who: Reader
) -> dict[str, Any]:
    """One host's latest facts and pending updates (404: never discovered)."""
    for entry in _hosts(api):
        if entry["name"] == name:
            return entry
    raise HTTPException(status_code=404, detail="no such host has been discovered")


@router.get("/compliance", tags=["compliance"])
def compliance(
    api: Api,
    who: Reader,
    host: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    overdue: bool = False,
    overdue_only: bool = False,
    due_within: Annotated[int | None, Query(ge=0, le=3650)] = None,
) -> dict[str, Any]:
    """Compliance against SLAs (``patchpilot.compliance/v1``, what ``patchpilot compliance
    --format json`` prints): hosts, SLA attainment and time to remediate, items, due-soon
    items, remediation capacity, the Kaplan-Meier curve. ``overdue_only`` is the older name
    of ``overdue``."""
    from patchpilot.app import acceptances
    from patchpilot.app import compliance as sla
    from patchpilot.core.inventory import load_inventory
    from patchpilot.core.policy import load_policy

    inventory = load_inventory(api.inventory, ssh=api.settings.ssh)
    return sla.compliance_document(
        api.store,
        load_policy(api.policy),
        acceptances=acceptances.load(api.settings),
        hosts=dict(inventory.hosts) or None,
        inventory_hosts=inventory.hosts,
        host=host,
        overdue_only=overdue or overdue_only,
        due_within=due_within,
    )


# --------------------------------------------------------------------------- schedules


@router.get("/schedules", tags=["schedules"])
def list_schedules(api: Api, who: Reader) -> dict[str, Any]:
    """Every schedule, with its next occurrence."""
    from patchpilot.app import schedules

    items = schedules.list_schedules(api.store)
    return {
        "schema": "patchpilot.schedules/v1",
        "schedules": schedules.schedule_documents(items, utcnow()),
    }


@router.post("/schedules", status_code=201, tags=["schedules"])
def create_schedule(spec: dict[str, Any], api: Api, who: Scheduler) -> dict[str, Any]:
    """Create a schedule, e.g. ``{"kind": "scan", "cron": "*/5 * * * *", "timezone": "UTC"}``
    (an invalid or unknown field: 422)."""
    from patchpilot.app import schedules

    created = schedules.add_schedule(
        api.store,
        spec,
        actor=who.name,
        audit=AuditLog.for_settings(api.settings, actor=who.name),
    )
    log.info("api.schedule.added", schedule_id=created.id, actor=who.name)
    document = schedules.schedule_documents([created], utcnow())[0]
    return {"schema": "patchpilot.schedule/v1", **document}


@router.delete("/schedules/{schedule_id}", tags=["schedules"])
def delete_schedule(
    schedule_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
    api: Api,
    who: Scheduler,
) -> dict[str, Any]:
    """Remove a schedule (404: unknown); its recorded occurrences stay."""
    from patchpilot.app import schedules

    removed = schedules.remove_schedule(
        api.store,
        schedule_id,
        actor=who.name,
        audit=AuditLog.for_settings(api.settings, actor=who.name),
    )
    return {"schema": "patchpilot.schedule/v1", "removed": True, **removed.document()}


# --------------------------------------------------------------------------- audit, memory


@router.get("/audit", tags=["audit"])
def audit(
    api: Api,
    who: Reader,
    run_id: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The audit log, oldest first, one page (``offset``, ``limit``)."""
    if run_id is not None and not RUN_ID_RE.fullmatch(run_id):
        raise HTTPException(status_code=404, detail="no such run (not a run id)")
    events = read_events(api.settings, run_id=run_id)
    page = events[offset : offset + limit]
    return {
        "schema": "patchpilot.audit/v1",
        "total": len(events),
        "offset": offset,
        "limit": limit,
        "events": [e.model_dump(mode="json") for e in page],
    }


@router.get("/memory/search", tags=["memory"])
def memory_search(
    api: Api,
    who: Reader,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY)],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """The decisions, outcomes and incidents closest to ``q``."""
    from patchpilot.core.text import bounded

    bounded(q, what="q", max_length=MAX_QUERY, newlines=False)
    items = api.memory().recall(q, k=limit)
    return {"schema": "patchpilot.memory/v1", "items": [i.model_dump(mode="json") for i in items]}


# --------------------------------------------------------------------------- chat


@router.post("/ask", tags=["chat"])
def ask(body: AskBody, api: Api, who: Reader) -> dict[str, Any]:
    """One chat request: a question is answered from the facts; a change request is queued
    as a run (``trigger: chat``) that waits for approval, answered at once with its run id and
    status ``queued`` (needs the ``start`` role); a decision needs ``decide``."""
    answer = run_views.ask_as(
        api.settings,
        api.store,
        who,
        body.text,
        inventory=api.inventory,
        policy=api.policy,
        executor=api.executor,
    )
    log.info("api.ask.answered", actor=who.name, intent=answer.request.intent.value)
    return {"schema": "patchpilot.answer/v1", **answer.model_dump(mode="json")}


# --------------------------------------------------------------------------- analytics


@router.get("/analytics", tags=["analytics"])
def analytics(
    api: Api,
    who: Reader,
    since: Annotated[int, Query(ge=1, le=3650, description="runs of the last DAYS days")] = 90,
) -> dict[str, Any]:
    """Process analytics of the patch runs (``patchpilot.analytics/v1``, what ``patchpilot
    analytics --format json`` prints): stage durations, lead time, hosts per hour, rollback
    and failure rates, approval wait, the bottleneck and what would shorten it."""
    from patchpilot.app.analytics import analytics as process_analytics

    return process_analytics(api.store, since_days=since).document()
