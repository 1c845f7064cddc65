"""The compliance document as one self-contained HTML page an auditor can open offline.

One file: inline CSS, two inline SVG charts (the Kaplan-Meier time-to-remediate curve, the open
and overdue counts over time), no script, no external resource. The template
(``templates/compliance.html``) is rendered by Jinja2 with autoescape on, so every value from
outside (host and package names, advisory ids, acceptance reasons) is text; the charts'
geometry is numbers computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined

__all__ = ["TEMPLATES", "chart_history", "chart_km", "render"]

TEMPLATES: Final = Path(__file__).parent / "templates"
WIDTH: Final = 640
HEIGHT: Final = 240
PAD: Final = 40


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _x(value: float, top: float) -> float:
    return round(PAD + (WIDTH - 2 * PAD) * (value / top if top else 0.0), 1)


def _y(value: float, top: float) -> float:
    return round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value / top if top else 0.0), 1)


def chart_km(curve: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The KM step curve as SVG geometry: ``points`` of a polyline, censor ``ticks``, axes."""
    if not curve:
        return {"points": "", "ticks": [], "x_max": 0, "x_labels": [], "y_labels": []}
    x_max = max(float(p["days"]) for p in curve) or 1.0
    points: list[str] = []
    ticks: list[dict[str, float]] = []
    previous = 1.0
    for p in curve:
        x = _x(float(p["days"]), x_max)
        points.append(f"{x},{_y(previous, 1.0)}")
        previous = float(p["open"])
        points.append(f"{x},{_y(previous, 1.0)}")
        if p["censored"]:
            ticks.append({"x": x, "y": _y(previous, 1.0)})
    return {
        "points": " ".join(points),
        "ticks": ticks,
        "x_max": round(x_max, 1),
        "x_labels": [
            {"x": _x(x_max * f, x_max), "text": f"{x_max * f:.0f}"} for f in (0, 0.25, 0.5, 0.75, 1)
        ],
        "y_labels": [{"y": _y(v, 1.0), "text": f"{v:.0%}"} for v in (0, 0.25, 0.5, 0.75, 1.0)],
        "half": _y(0.5, 1.0),
    }


def chart_history(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Open and overdue counts over time as two polylines, with axis labels."""
    if not history:
        return {"open": "", "overdue": "", "x_labels": [], "y_labels": [], "y_max": 0}
    y_max = max(*(int(p["open"]) for p in history), 1)
    n = max(len(history) - 1, 1)
    open_points = " ".join(f"{_x(i, n)},{_y(int(p['open']), y_max)}" for i, p in enumerate(history))
    overdue_points = " ".join(
        f"{_x(i, n)},{_y(int(p['overdue']), y_max)}" for i, p in enumerate(history)
    )
    marks = sorted({0, n // 2, n}) if len(history) > 1 else [0]
    return {
        "open": open_points,
        "overdue": overdue_points,
        "x_labels": [{"x": _x(i, n), "text": str(history[i]["date"])} for i in marks],
        "y_labels": [{"y": _y(v, y_max), "text": str(v)} for v in sorted({0, y_max // 2, y_max})],
        "y_max": y_max,
    }


def render(document: Mapping[str, Any]) -> str:
    """The page of a ``patchpilot.compliance/v1`` document."""
    template = _environment().get_template("compliance.html")
    return template.render(
        doc=document,
        km=chart_km(document["survival"]["curve"]),
        hist=chart_history(document["history"]),
        width=WIDTH,
        height=HEIGHT,
        pad=PAD,
    )
