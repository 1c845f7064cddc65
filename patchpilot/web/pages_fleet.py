"""The fleet (``GET /``), findings (``GET /findings``) and settings (``GET /settings``) pages.

Each reads its model from :mod:`patchpilot.app.views` and renders it; sorting, filtering and
pagination are query parameters (plain links and GET forms: no JavaScript needed). The fleet
chart is an SVG drawn here from numbers (:func:`chart`), with the same figures as a table.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from patchpilot.api.app import state_of
from patchpilot.app import views
from patchpilot.core.auth import Action, Principal
from patchpilot.core.models import FixStatus, Severity
from patchpilot.web.render import render
from patchpilot.web.session import require_page

__all__ = ["chart", "router"]

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(require_page(Action.READ))]

_W: Final = 760
_H: Final = 220
_LEFT: Final = 44
_RIGHT: Final = 52
_TOP: Final = 14
_BOTTOM: Final = 34


def _int(value: str | None, default: int = 1, *, low: int = 1, high: int = 1_000_000) -> int:
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        return default
    return min(max(number, low), high)


def _choice(value: str | None, allowed: tuple[str, ...] | list[str]) -> str:
    return value if value is not None and value in allowed else ""


def chart(points: list[views.HistoryPoint]) -> dict[str, Any] | None:
    """The fleet chart's geometry: two polylines (SLA compliance %, open findings) over days,
    axis ticks and point labels; None without points."""
    if not points:
        return None
    width = _W - _LEFT - _RIGHT
    height = _H - _TOP - _BOTTOM
    most = max(p.findings for p in points) or 1
    step = width / (len(points) - 1) if len(points) > 1 else 0.0

    def x(i: int) -> float:
        return round(_LEFT + (i * step if len(points) > 1 else width / 2), 1)

    def y_percent(value: float) -> float:
        return round(_TOP + height * (1 - value / 100.0), 1)

    def y_count(value: int) -> float:
        return round(_TOP + height * (1 - value / most), 1)

    marks = []
    for i, p in enumerate(points):
        marks.append(
            {
                "x": x(i),
                "yc": y_percent(p.percent),
                "yf": y_count(p.findings),
                "label": f"{p.day.isoformat()}: {p.percent:.0f}% of {p.hosts} hosts within SLA, "
                f"{p.findings} open findings",
            }
        )
    every = max(1, len(points) // 6)
    return {
        "width": _W,
        "height": _H,
        "left": _LEFT,
        "right": _W - _RIGHT,
        "top": _TOP,
        "bottom": _H - _BOTTOM,
        "compliance": " ".join(f"{m['x']},{m['yc']}" for m in marks),
        "findings": " ".join(f"{m['x']},{m['yf']}" for m in marks),
        "marks": marks,
        "y_ticks": [{"y": y_percent(v), "label": f"{v}%"} for v in (0, 50, 100)],
        "count_ticks": [{"y": y_count(v), "label": str(v)} for v in sorted({0, most // 2, most})],
        "x_ticks": [
            {"x": x(i), "label": p.day.strftime("%m-%d")}
            for i, p in enumerate(points)
            if i % every == 0 or i == len(points) - 1
        ],
    }


@router.get("/")
async def fleet_page(
    request: Request,
    who: Reader,
    sort: str | None = None,
    q: str | None = None,
    state: str | None = None,
    page: str | None = None,
) -> Response:
    """Every inventory host, sortable, filterable and paginated, with the fleet's chart."""
    api = state_of(request)

    def build() -> views.FleetView:
        inventory = views.inventory_of(api.settings, api.inventory)
        return views.fleet_view(
            api.settings,
            api.store,
            inventory,
            sort=_choice(sort, views.FLEET_SORTS) or "name",
            q=(q or "")[:200],
            state=_choice(state, list(views.FLEET_STATES)),
            page=_int(page),
        )

    view = await run_in_threadpool(build)
    params = {k: v for k, v in (("q", view.q), ("state", view.state)) if v}
    return render(
        request,
        "fleet.html",
        {
            "view": view,
            "chart": chart(view.history),
            "states": views.FLEET_STATES,
            "sorts": views.FLEET_SORTS,
            "severities": views.SEVERITY_ORDER,
            "filter_params": params,
            "page_params": {**params, "sort": view.sort},
            "non_compliant": views.NON_COMPLIANT,
        },
    )


@router.get("/findings")
async def findings_page(
    request: Request,
    who: Reader,
    host: str | None = None,
    severity: str | None = None,
    kev: str | None = None,
    fix_state: str | None = None,
    due_before: str | None = None,
    package: str | None = None,
    page: str | None = None,
) -> Response:
    """Open findings per host and fix, filtered, each with its risk rationale."""
    api = state_of(request)
    wanted_severity = Severity(severity) if severity in set(Severity) else None
    wanted_fix = FixStatus(fix_state) if fix_state in set(FixStatus) else None
    wanted_kev = {"yes": True, "no": False}.get(kev or "")
    try:
        due = date.fromisoformat(due_before) if due_before else None
    except ValueError:
        due = None
    host_name = (host or "").strip()[:255] or None
    package_name = (package or "").strip()[:200] or None

    def build() -> views.FindingsView:
        return views.findings_view(
            api.settings,
            api.store,
            host=host_name,
            severity=wanted_severity,
            kev=wanted_kev,
            fix_state=wanted_fix,
            due_before=due,
            package=package_name,
            page=_int(page),
        )

    view = await run_in_threadpool(build)
    filters = {
        "host": host_name or "",
        "severity": wanted_severity.value if wanted_severity else "",
        "kev": {True: "yes", False: "no"}.get(wanted_kev, "") if wanted_kev is not None else "",
        "fix_state": wanted_fix.value if wanted_fix else "",
        "due_before": due.isoformat() if due else "",
        "package": package_name or "",
    }
    return render(
        request,
        "findings.html",
        {
            "view": view,
            "filters": filters,
            "page_params": {k: v for k, v in filters.items() if v},
            "severities": [s.value for s in sorted(Severity, key=lambda s: -s.rank)],
            "fix_states": [s.value for s in FixStatus],
        },
    )


@router.get("/settings")
async def settings_page(request: Request, who: Reader) -> Response:
    """Feeds and their staleness, the policy in force, the service settings (read-only)."""
    api = state_of(request)
    view = await run_in_threadpool(views.settings_view, api.settings, api.store, api.policy)
    return render(request, "settings.html", {"view": view})
