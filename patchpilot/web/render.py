"""Rendering pages: one Jinja2 environment (autoescape on for everything) and its filters.

:func:`render` adds ``user`` (the :class:`~patchpilot.core.auth.Principal` or None),
``csrf_token`` (for every form) and ``nav`` (the active section) to a page's context. Every
value a template prints is escaped (``autoescape`` is on for every template, whatever its
name), so advisory text, package descriptions, comments and chat input render as text; no
template uses ``|safe`` on data. The SVG chart is built from numbers and escaped text too.

Filters: ``ago`` (relative time: "3 h ago"), ``dt`` (UTC, ``2026-12-06 08:43Z``), ``sev``
(a severity's badge class), ``status_class`` (a run or deployment status's badge class).
A status is always shown as its word in a coloured badge: never colour alone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from patchpilot.core.auth import Principal
from patchpilot.core.models import utcnow
from patchpilot.web.session import csrf_token

__all__ = [
    "NAV",
    "TEMPLATES",
    "ago",
    "dt",
    "environment",
    "render",
    "sev",
    "status_class",
]

TEMPLATES: Final = Path(__file__).parent / "templates"

NAV: Final[tuple[tuple[str, str, str], ...]] = (
    ("fleet", "/", "Fleet"),
    ("findings", "/findings", "Findings"),
    ("runs", "/runs", "Runs"),
    ("approvals", "/approvals", "Approvals"),
    ("schedules", "/schedules", "Schedules"),
    ("audit", "/audit", "Audit"),
    ("ask", "/ask", "Ask"),
    ("settings", "/settings", "Settings"),
)
"""(key, path, label) of every section, in the order the navigation shows them."""

_SEVERITIES: Final = frozenset({"critical", "high", "medium", "low", "unknown"})

_STATUS: Final[dict[str, str]] = {
    # good
    "ok": "ok",
    "completed": "ok",
    "success": "ok",
    "succeeded": "ok",
    "done": "ok",
    "approved": "ok",
    "compliant": "ok",
    "healthy": "ok",
    "passed": "ok",
    "on-time": "ok",
    "enabled": "ok",
    "installed": "ok",
    "ready": "ok",
    "simulated": "ok",
    # needs attention
    "pending": "warn",
    "awaiting-approval": "warn",
    "waiting": "warn",
    "waiting-window": "warn",
    "partial": "warn",
    "halted": "warn",
    "late": "warn",
    "stale": "warn",
    "due-soon": "warn",
    "not scanned": "warn",
    "not-scanned": "warn",
    "expired": "warn",
    "cancelled": "warn",
    "skipped": "warn",
    "disabled": "warn",
    "reboot": "warn",
    # bad
    "failed": "bad",
    "failure": "bad",
    "error": "bad",
    "unreachable": "bad",
    "rejected": "bad",
    "rolled-back": "bad",
    "rollback": "bad",
    "rolled_back": "bad",
    "overdue": "bad",
    "non-compliant": "bad",
    "missed": "bad",
    # in progress / neutral
    "queued": "info",
    "running": "info",
    "started": "info",
    "in-progress": "info",
}


def ago(value: datetime | str | None, now: datetime | None = None) -> str:
    """``value`` relative to now: ``just now``, ``5 min ago``, ``3 h ago``, ``2 d ago``,
    ``in 4 h`` for the future; ``-`` for None."""
    when = _as_datetime(value)
    if when is None:
        return "-"
    delta = (now or utcnow()) - when
    seconds = int(delta.total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        text = f"{max(1, round(seconds / 60))} min"
    elif seconds < 48 * 3600:
        text = f"{round(seconds / 3600)} h"
    else:
        text = f"{round(seconds / 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def dt(value: datetime | date | str | None) -> str:
    """A moment as short UTC text (``2026-12-06 08:43Z``); a date as ``2026-12-06``."""
    if value is None or value == "":
        return "-"
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    when = _as_datetime(value)
    if when is None:
        return str(value)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


def _as_datetime(value: datetime | date | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def sev(value: object) -> str:
    """The badge class of a severity: ``sev-critical`` ... ``sev-low``, else ``sev-unknown``."""
    text = str(getattr(value, "value", value) or "unknown").lower()
    return f"sev-{text if text in _SEVERITIES else 'unknown'}"


def status_class(value: object) -> str:
    """The badge class of a run, deployment, host or compliance status: ``st-ok``,
    ``st-warn``, ``st-bad`` or ``st-info`` (anything unknown: ``st-info``)."""
    text = str(getattr(value, "value", value) or "").lower()
    return "st-" + _STATUS.get(text, _STATUS.get(text.replace("_", "-"), "info"))


def environment() -> Environment:
    """The dashboard's Jinja2 environment (autoescape on for every template)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(ago=ago, dt=dt, sev=sev, status_class=status_class)
    env.globals.update(NAV=NAV)
    return env


_ENV: Final = environment()


def _section(request: Request) -> str:
    path = request.url.path
    first = path.strip("/").split("/", 1)[0]
    for key, href, _label in NAV:
        if href == "/" + first or (first == "" and href == "/"):
            return key
    return ""


def render(
    request: Request, template: str, context: dict[str, Any], status: int = 200
) -> HTMLResponse:
    """The page ``template`` with ``context`` plus ``user``, ``csrf_token``, ``nav`` and
    ``request`` (a context's own ``nav`` wins: the active section of the navigation)."""
    user: Principal | None = getattr(request.state, "pp_user", None)
    values: dict[str, Any] = {
        "request": request,
        "user": user,
        "csrf_token": csrf_token(request) if user is not None else "",
        "nav": _section(request),
    }
    values.update(context)
    body = _ENV.get_template(template).render(values)
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
