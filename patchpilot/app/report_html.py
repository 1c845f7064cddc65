"""``patchpilot report --format html``: a scan's or a patch run's report as one self-contained
page an auditor can open offline.

One file, as the compliance page (:mod:`patchpilot.app.compliance_html`): inline CSS, inline
SVG bar charts (geometry from :mod:`patchpilot.app.svg`), no script, no external resource and
a Content-Security-Policy that forbids loading any. The template (``templates/report.html``)
is rendered by Jinja2 with autoescape on, so every value from outside (host and package names,
advisory ids, rationales, feed sources, approval comments, health-check output) is text.
Advisory ids and feed sources are printed as text, never as links.

A scan report (``patchpilot.report/v1``): the summary, hosts, findings grouped per fix with
severity, KEV, EPSS, SSVC, due date and rationale, the feeds and their staleness, data-quality
warnings, and charts of open findings by severity and of findings per host. A patch run's
report adds, above it, the run (``patchpilot.run/v1`` as the dashboard reads it,
:func:`patchpilot.app.run_views.run_view`): status and reason, the plan, the approval
decision, rings and waves, each host's deployment (from -> to, status, reason, health checks,
rollback), the post-patch analysis of each ring with its metrics, stage durations (a chart) and
the predicted impact of each wave.

:func:`scan_report_html` and :func:`run_report_html` read what they need from the store (EPSS
of the findings' CVEs; the run's hosts, waves and checks) and render; :func:`render_scan` and
:func:`render_run` are pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from jinja2 import Environment

from patchpilot.app.compliance_html import offline_environment
from patchpilot.app.exports.common import best_epss, report_cves
from patchpilot.app.svg import bar_chart
from patchpilot.core.models import Enrichment
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store

__all__ = [
    "MAX_HOST_BARS",
    "SEVERITIES",
    "render_run",
    "render_scan",
    "run_report_html",
    "scan_report_html",
]

SEVERITIES: Final = ("critical", "high", "medium", "low", "unimportant", "unknown")
"""Severities in the order the charts and badges show them (``unknown`` is never low)."""
SEVERITY_COLORS: Final = {
    "critical": "#7a1010",
    "high": "#c0392b",
    "medium": "#b7770a",
    "low": "#2e6fa8",
    "unimportant": "#6b7684",
    "unknown": "#8a5a9e",
}
STAGE_COLORS: Final = {
    "awaiting_approval": "#b7770a",
    "waiting_window": "#b7770a",
    "deployment": "#2d4f8f",
    "analysis": "#6a3d9a",
}
MAX_HOST_BARS: Final = 25
"""The per-host chart shows this many hosts with the most findings (the table lists all)."""


def _environment() -> Environment:
    env = offline_environment()
    env.filters["duration"] = duration
    env.filters["num"] = _num
    return env


def duration(seconds: float | None) -> str:
    """Seconds in words for a reader: ``0.02 s``, ``42 s``, ``3 min 5 s``, ``2 h 0 min``,
    ``1 d 4 h``; a dash when unknown (a stage that has not ended)."""
    if seconds is None:
        return "–"
    s = max(float(seconds), 0.0)
    if s < 10:
        return f"{s:.2f} s" if s < 1 else f"{s:.1f} s"
    whole = round(s)
    if whole < 60:
        return f"{whole} s"
    minutes, sec = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _num(value: object, digits: int = 4) -> str:
    """A number for a table cell (``digits`` significant digits); a dash for none."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"{value:.{digits}g}"
    return str(value)


def _parse(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------- the scan part


def _fixes(
    document: Mapping[str, Any], enrichment: Mapping[str, Enrichment]
) -> list[dict[str, Any]]:
    """The report's fix groups, each with ``epss`` (the highest of its CVEs, or None)."""
    out = []
    for group in document.get("fixes") or ():
        epss = best_epss(enrichment, group.get("cves") or ())
        out.append(
            {
                **group,
                "epss": None
                if epss is None
                else {
                    "probability": epss.probability,
                    "percentile": epss.percentile,
                    "date": epss.score_date.isoformat(),
                },
            }
        )
    return out


def _severity_chart(findings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Open findings (not covered by a live risk acceptance) by severity, worst first."""
    counts = Counter(str(f.get("severity")) for f in findings if not f.get("accepted"))
    known = [s for s in SEVERITIES if counts.get(s)] or ["critical", "high", "medium", "low"]
    others = sorted(s for s in counts if s not in SEVERITIES)
    return bar_chart(
        [
            {"label": s, "value": counts.get(s, 0), "color": SEVERITY_COLORS.get(s, "#444")}
            for s in [*known, *others]
        ]
    )


def _host_chart(findings: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], int]:
    """Findings per host (most first, at most :data:`MAX_HOST_BARS`) and how many hosts with
    findings the chart leaves out."""
    per_host = Counter(str(f.get("host")) for f in findings)
    kev = Counter(str(f.get("host")) for f in findings if f.get("kev"))
    ranked = sorted(per_host.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ranked[:MAX_HOST_BARS]
    bars = [
        {
            "label": host,
            "value": n,
            "text": f"{n} ({kev[host]} KEV)" if kev[host] else str(n),
        }
        for host, n in shown
    ]
    return bar_chart(bars), len(ranked) - len(shown)


def _feeds(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's feeds, each with ``age_days`` at the report's time (or None)."""
    at = _parse(document.get("generated_at"))
    out = []
    for feed in (document.get("data") or {}).get("feeds") or ():
        fetched = _parse(feed.get("fetched_at"))
        age = None
        if at is not None and fetched is not None:
            age = round(max((at - fetched).total_seconds(), 0.0) / 86400, 1)
        out.append({**feed, "age_days": age})
    return out


def _scan_context(
    document: Mapping[str, Any], enrichment: Mapping[str, Enrichment]
) -> dict[str, Any]:
    findings = list(document.get("findings") or ())
    host_chart, hosts_left_out = _host_chart(findings)
    return {
        "doc": document,
        "data": document.get("data") or {},
        "summary": document.get("summary") or {},
        "report_run": document.get("run"),
        "scan_hosts": list(document.get("hosts") or ()),
        "fixes": _fixes(document, enrichment),
        "feeds": _feeds(document),
        "open_findings": sum(not f.get("accepted") for f in findings),
        "severity_chart": _severity_chart(findings),
        "host_chart": host_chart,
        "hosts_left_out": hosts_left_out,
    }


def render_scan(
    document: Mapping[str, Any], enrichment: Mapping[str, Enrichment] | None = None
) -> str:
    """The page of a scan report (``patchpilot.report/v1``); ``enrichment``: the CVEs' EPSS
    (:meth:`Store.enrichment`)."""
    template = _environment().get_template("report.html")
    return template.render(**_scan_context(document, enrichment or {}), run=None)


def scan_report_html(store: Store, document: Mapping[str, Any]) -> str:
    """The page of a scan report, with its CVEs' EPSS from the store."""
    return render_scan(document, store.enrichment(report_cves(document)))


# --------------------------------------------------------------------------- the run part


def _stage_chart(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each stage's duration (``deployment · canary`` per ring), in start order."""
    bars = []
    for stage in stages:
        name = str(stage.get("name"))
        ring = stage.get("ring")
        seconds = stage.get("seconds")
        bars.append(
            {
                "label": f"{name} · {ring}" if ring else name,
                "value": seconds or 0.0,
                "text": duration(seconds) if seconds is not None else "not ended",
                "color": STAGE_COLORS.get(name, "#4f6d7a"),
            }
        )
    return bar_chart(bars)


def _run_hosts(view: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per host of the run: its ring, compliance, deployments (rows of the run document), the
    deployment record's checks and rollback (``detail``) and, if not reached, why."""
    document = view["document"]
    rows: dict[str, list[Mapping[str, Any]]] = {}
    for row in document.get("deployments") or ():
        rows.setdefault(str(row["host"]), []).append(row)
    details = {str(d["host"]): d for d in view.get("hosts") or ()}
    unreachable = {str(u["host"]): u.get("error") for u in document.get("unreachable") or ()}
    compliance = document.get("compliance") or {}
    names = list(dict.fromkeys([*(str(h) for h in document.get("hosts") or ()), *rows, *details]))
    ring_of = {str(h): r["name"] for r in document.get("rings") or () for h in r.get("hosts", ())}
    return [
        {
            "name": name,
            "ring": ring_of.get(name) or (details[name]["ring"] if name in details else None),
            "compliance": compliance.get(name),
            "deployments": rows.get(name, []),
            "detail": details.get(name),
            "unreachable": name in unreachable,
            "unreachable_error": unreachable.get(name),
        }
        for name in names
    ]


def render_run(
    combined: Mapping[str, Any],
    view: Mapping[str, Any],
    enrichment: Mapping[str, Enrichment] | None = None,
) -> str:
    """The page of a patch run: ``combined`` is its report (``report RUN_ID --format json``:
    the scan report plus the run's fields), ``view`` the run as the dashboard reads it
    (:func:`~patchpilot.app.run_views.run_view`: ``document``, ``timeline`` with waves,
    ``hosts`` with health checks and rollbacks, ``rollbacks``)."""
    document = view["document"]
    deployments = list(document.get("deployments") or ())
    template = _environment().get_template("report.html")
    return template.render(
        **_scan_context(combined, enrichment or {}),
        run=document,
        view=view,
        timeline=list(view.get("timeline") or ()),
        run_hosts=_run_hosts(view),
        rollbacks=list(view.get("rollbacks") or ()),
        deployed=Counter(str(d.get("status")) for d in deployments),
        stage_chart=_stage_chart(document.get("stages") or ()),
    )


def run_report_html(
    settings: Settings, store: Store, run_id: str, combined: Mapping[str, Any]
) -> str:
    """The page of patch run ``run_id`` whose report is ``combined``
    (:func:`patchpilot.app.runs.patch_run_report`); its scan part alone when the run cannot be
    read as the dashboard reads it."""
    from patchpilot.app.run_views import run_view

    enrichment = store.enrichment(report_cves(combined))
    view = run_view(settings, store, run_id)
    if view is None or view["document"].get("schema") != "patchpilot.run/v1":
        return render_scan(combined, enrichment)
    return render_run(combined, view, enrichment)
