"""The dashboard's runs, run, approval, schedules, audit and ask pages (issue 16).

Every page reads the service's :class:`~patchpilot.api.app.ApiState` and calls the same
application layer as the REST API (:mod:`patchpilot.app.run_views`, ``app.schedules``): a
decision here is :func:`~patchpilot.app.run_views.decide_as` (role check, self-approval
refused and audit-logged, the run continued by the service's executor), a chat request
:func:`~patchpilot.app.run_views.ask_as`. Pages:

- ``GET /runs`` (filter ``status``, ``kind``; ``page``), ``GET /runs/{run_id}`` and its live
  fragment ``GET /runs/{run_id}/live`` (polled by ``/static/app.js`` while the run is active).
- ``GET /approvals`` (``all=1``: decided ones too), ``GET /approvals/{run_id}``; Contract: the
  approve form posts to ``/approvals/{run_id}/approve`` with ``csrf_token`` and ``comment``
  (reject: ``/approvals/{run_id}/reject``), then 303 to the run page. The forms are absent
  for the requester and roles without ``decide``; the server refuses them anyway (403), and
  a decided approval answers 409.
- ``GET /schedules`` (add and remove forms for roles with ``schedule``), ``POST /schedules``,
  ``POST /schedules/{id}/remove``; ``GET /audit`` (filter ``run_id``, ``actor``; ``page``);
  ``GET /ask`` and ``POST /ask``.

Run ids are checked against :data:`~patchpilot.core.intents.RUN_ID_RE` before anything is
looked up (404). Every form needs the session's CSRF token (:func:`verify_csrf`); every
string is rendered by autoescaped templates.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from patchpilot.api.app import ApiState, state_of
from patchpilot.app import run_views
from patchpilot.core.audit import read_events
from patchpilot.core.auth import Action, Principal, allowed
from patchpilot.core.errors import AlreadyDecidedError, InvalidInputError
from patchpilot.core.intents import RUN_ID_RE
from patchpilot.core.models import utcnow
from patchpilot.core.text import MAX_COMMENT_LENGTH, bounded
from patchpilot.web.render import render
from patchpilot.web.session import current_user, require_page, verify_csrf

__all__ = ["router"]

log = structlog.get_logger(__name__)

router = APIRouter(include_in_schema=False)

RUNS_PER_PAGE: Final = 50
AUDIT_PER_PAGE: Final = 100
RUN_STATUSES: Final = (
    "queued",
    "running",
    "pending",
    "awaiting_approval",
    "completed",
    "succeeded",
    "partial",
    "halted",
    "failed",
    "rejected",
    "cancelled",
)
"""The statuses the runs page filters by."""

Reader = Annotated[Principal, Depends(require_page(Action.READ))]
Scheduler = Annotated[Principal, Depends(require_page(Action.SCHEDULE))]
User = Annotated[Principal, Depends(current_user)]
Csrf = Annotated[str | None, Form()]
Page = Annotated[int, Query(ge=1, le=100_000)]


def _api(request: Request) -> ApiState:
    return state_of(request)


def _run_id(run_id: str) -> str:
    """``run_id`` if it is a run id (else 404, before anything is looked up)."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise HTTPException(status_code=404, detail="no such run (not a run id)")
    return run_id


def _pages(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))


def duration_text(seconds: float | None) -> str:
    """``45 s``, ``12 min 5 s``, ``3 h 20 min``, ``2 d 4 h``; ``-`` for None."""
    if seconds is None:
        return "-"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


# --------------------------------------------------------------------------- runs


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    who: Reader,
    status: Annotated[str | None, Query(max_length=32)] = None,
    kind: Annotated[Literal["scan", "run", ""] | None, Query()] = None,
    page: Page = 1,
) -> Response:
    """Runs, newest first: status, trigger (who), started, duration; filter and pages."""
    api = _api(request)
    wanted = status if status in RUN_STATUSES else None
    rows, total = run_views.run_rows(
        api.settings,
        api.store,
        status=wanted,
        kind=kind or None,
        offset=(page - 1) * RUNS_PER_PAGE,
        limit=RUNS_PER_PAGE,
    )
    for row in rows:
        row["duration"] = duration_text(row["duration_s"])
    return render(
        request,
        "runs.html",
        {
            "runs": rows,
            "total": total,
            "page": page,
            "pages": _pages(total, RUNS_PER_PAGE),
            "status": wanted or "",
            "kind": kind or "",
            "statuses": RUN_STATUSES,
        },
    )


def _run_view(api: ApiState, run_id: str) -> dict[str, Any]:
    view = run_views.run_view(api.settings, api.store, _run_id(run_id), submitted=api.submitted)
    if view is None:
        raise HTTPException(status_code=404, detail=f"no run {run_id}")
    view["duration"] = duration_text(view["duration_s"]) if view["duration_s"] else None
    return view


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, who: Reader) -> Response:
    """One run: plan, rings and waves, every host, health checks, rollbacks, audit trail."""
    view = _run_view(_api(request), run_id)
    return render(request, "run.html", {"run": view, "now": utcnow()})


@router.get("/runs/{run_id}/live", response_class=HTMLResponse)
def run_live(request: Request, run_id: str, who: Reader) -> Response:
    """The run page's live part (status and deployments), as an HTML fragment."""
    view = _run_view(_api(request), run_id)
    return render(request, "_run_live.html", {"run": view})


# --------------------------------------------------------------------------- approvals


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(
    request: Request,
    who: Reader,
    all: Annotated[bool, Query(alias="all")] = False,
) -> Response:
    """Pending approvals (``all=1``: decided and expired ones too)."""
    api = _api(request)
    rows = run_views.approval_rows(api.settings, api.store, include_decided=all)
    return render(request, "approvals.html", {"approvals": rows, "all": all})


def _recall(api: ApiState) -> run_views.Recall:
    def recall(query: str, package: str, k: int) -> list[dict[str, Any]]:
        items = api.memory().recall(
            query, kinds=("outcomes", "incidents"), k=k, where={"package": package}
        )
        return [i.model_dump(mode="json") for i in items]

    return recall


@router.get("/approvals/{run_id}", response_class=HTMLResponse)
def approval_page(request: Request, run_id: str, who: Reader) -> Response:
    """What an approver needs: the frozen plan, changes per host, tests, risk, blast radius,
    the memory, who asked; approve and reject forms for those who may decide."""
    api = _api(request)
    view = run_views.approval_view(api.settings, api.store, _run_id(run_id), recall=_recall(api))
    if view is None:
        raise HTTPException(status_code=404, detail=f"no approval for run {run_id}")
    requester = view["approval"].get("requested_by")
    is_requester = isinstance(requester, str) and requester.casefold() == who.name.casefold()
    may_decide = allowed(who.role, Action.DECIDE)
    return render(
        request,
        "approval.html",
        {
            "view": view,
            "show_forms": view["pending"] and may_decide and not is_requester,
            "is_requester": is_requester,
            "may_decide": may_decide,
            "max_comment": MAX_COMMENT_LENGTH,
        },
    )


def _decide(
    request: Request,
    who: Principal,
    run_id: str,
    status: Literal["approved", "rejected"],
    token: str | None,
    comment: str | None,
) -> Response:
    _run_id(run_id)
    verify_csrf(request, token)
    text = (comment or "").strip() or None
    if text is not None:
        text = bounded(text, what="comment", max_length=MAX_COMMENT_LENGTH)
    api = _api(request)
    verb = "approve" if status == "approved" else "reject"
    try:
        decided = run_views.decide_as(
            api.settings,
            api.store,
            who,
            run_id,
            status,
            comment=text,
            via="web",
            words=f"POST /approvals/{run_id}/{verb} (web dashboard)",
            executor=api.executor,
        )
    except AlreadyDecidedError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    log.info("web.approval.decided", run_id=run_id, actor=who.name, status=decided.status)
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


@router.post("/approvals/{run_id}/approve")
def approve(
    request: Request,
    run_id: str,
    who: User,
    csrf_token: Csrf = None,
    comment: Annotated[str | None, Form()] = None,
) -> Response:
    """Approve (Contract: fields ``csrf_token`` and ``comment``); 303 to the run page."""
    return _decide(request, who, run_id, "approved", csrf_token, comment)


@router.post("/approvals/{run_id}/reject")
def reject(
    request: Request,
    run_id: str,
    who: User,
    csrf_token: Csrf = None,
    comment: Annotated[str | None, Form()] = None,
) -> Response:
    """Reject (fields ``csrf_token`` and ``comment``); 303 to the run page."""
    return _decide(request, who, run_id, "rejected", csrf_token, comment)


# --------------------------------------------------------------------------- schedules


def _schedules_page(
    request: Request,
    who: Principal,
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    from patchpilot.app import schedules

    api = _api(request)
    items = schedules.schedule_documents(schedules.list_schedules(api.store), utcnow(), upcoming=3)
    return render(
        request,
        "schedules.html",
        {
            "schedules": items,
            "may_schedule": allowed(who.role, Action.SCHEDULE),
            "error": error,
            "form": form or {},
        },
        status=status,
    )


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request, who: Reader) -> Response:
    """Every schedule with its next occurrences; add and remove forms for schedulers."""
    return _schedules_page(request, who)


_SCHEDULE_FIELDS: Final = ("kind", "cron", "rrule", "timezone", "duration", "cutoff", "limit")


@router.post("/schedules")
def add_schedule(
    request: Request,
    who: Scheduler,
    csrf_token: Csrf = None,
    kind: Annotated[str, Form(max_length=16)] = "",
    cron: Annotated[str, Form(max_length=200)] = "",
    rrule: Annotated[str, Form(max_length=500)] = "",
    timezone: Annotated[str, Form(max_length=64)] = "",
    duration: Annotated[str, Form(max_length=32)] = "",
    cutoff: Annotated[str, Form(max_length=32)] = "",
    limit: Annotated[str, Form(max_length=1000)] = "",
    only: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    """Add a schedule (fields as ``POST /api/v1/schedules``); 303 back to the list, or the
    page again with the reason (422)."""
    from patchpilot.app import schedules
    from patchpilot.core.audit import AuditLog

    verify_csrf(request, csrf_token)
    values = {
        "kind": kind,
        "cron": cron,
        "rrule": rrule,
        "timezone": timezone,
        "duration": duration,
        "cutoff": cutoff,
        "limit": limit,
    }
    spec: dict[str, Any] = {k: v.strip() for k, v in values.items() if v.strip()}
    items = [i for i in only.replace(",", " ").split() if i]
    if items:
        spec["only"] = items
    api = _api(request)
    try:
        created = schedules.add_schedule(
            api.store,
            spec,
            actor=who.name,
            audit=AuditLog.for_settings(api.settings, actor=who.name),
        )
    except InvalidInputError as exc:
        form = {**values, "only": only}
        return _schedules_page(request, who, error=str(exc), form=form, status=422)
    log.info("web.schedule.added", schedule_id=created.id, actor=who.name)
    return RedirectResponse("/schedules", status_code=303)


@router.post("/schedules/{schedule_id}/remove")
def remove_schedule(
    request: Request, schedule_id: str, who: Scheduler, csrf_token: Csrf = None
) -> Response:
    """Remove a schedule (404: unknown); 303 back to the list."""
    from patchpilot.app import schedules
    from patchpilot.core.audit import AuditLog

    if not (0 < len(schedule_id) <= 64 and schedule_id.replace("-", "").replace("_", "").isalnum()):
        raise HTTPException(status_code=404, detail="no such schedule")
    verify_csrf(request, csrf_token)
    api = _api(request)
    schedules.remove_schedule(
        api.store,
        schedule_id,
        actor=who.name,
        audit=AuditLog.for_settings(api.settings, actor=who.name),
    )
    log.info("web.schedule.removed", schedule_id=schedule_id, actor=who.name)
    return RedirectResponse("/schedules", status_code=303)


# --------------------------------------------------------------------------- audit


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    who: Reader,
    run_id: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    page: Page = 1,
) -> Response:
    """The audit log, newest first, one page; filter by run id and actor."""
    run_id = run_id or None
    actor = (actor or "").strip() or None
    if run_id is not None:
        _run_id(run_id)
    api = _api(request)
    events = read_events(api.settings, run_id=run_id)
    if actor is not None:
        events = [e for e in events if e.actor == actor]
    events.reverse()
    total = len(events)
    shown = events[(page - 1) * AUDIT_PER_PAGE : page * AUDIT_PER_PAGE]
    rows = [
        {
            "at": e.at,
            "run_id": e.run_id,
            "actor": e.actor,
            "action": e.action,
            "host": e.host,
            "package": e.package,
            "details": json.dumps(e.details, sort_keys=True, ensure_ascii=False, default=str)
            if e.details
            else "",
        }
        for e in shown
    ]
    return render(
        request,
        "audit.html",
        {
            "events": rows,
            "total": total,
            "page": page,
            "pages": _pages(total, AUDIT_PER_PAGE),
            "run_id": run_id or "",
            "actor": actor or "",
        },
    )


# --------------------------------------------------------------------------- ask


@router.get("/ask", response_class=HTMLResponse)
def ask_page(request: Request, who: Reader) -> Response:
    """The chat orchestrator in a text box."""
    return render(request, "ask.html", {"text": "", "answer": None})


@router.post("/ask", response_class=HTMLResponse)
def ask(
    request: Request,
    who: Reader,
    csrf_token: Csrf = None,
    text: Annotated[str, Form(max_length=run_views.MAX_ASK_LENGTH)] = "",
) -> Response:
    """Answer one chat request; a change request becomes a run waiting for approval (needs
    ``start``: 403 otherwise), linked from the answer."""
    verify_csrf(request, csrf_token)
    text = text.strip()
    if not text:
        return render(request, "ask.html", {"text": "", "answer": None, "error": "Ask something."})
    api = _api(request)
    answer = run_views.ask_as(
        api.settings, api.store, who, text, inventory=api.inventory, policy=api.policy
    )
    run = answer.run or {}
    run_id = run.get("run_id") or answer.facts.get("run_id")
    if not (isinstance(run_id, str) and RUN_ID_RE.fullmatch(run_id)):
        run_id = None
    log.info("web.ask.answered", actor=who.name, intent=answer.request.intent.value)
    return render(
        request,
        "ask.html",
        {
            "text": text,
            "answer": answer,
            "run_id": run_id,
            "run_status": run.get("status"),
            "awaiting_approval": run.get("waiting") == "approval"
            or run.get("status") == "awaiting_approval",
        },
    )
