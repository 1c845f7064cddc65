"""Geometry of the inline SVG charts of the HTML reports (one home for every chart).

The compliance page (:mod:`patchpilot.app.compliance_html`: a Kaplan-Meier curve, open and
overdue items over time) and the scan and run report (:mod:`patchpilot.app.report_html`: bar
charts of findings by severity, findings per host, stage durations) draw their charts as
inline ``<svg>`` in their Jinja2 templates. The functions here compute only numbers and label
texts: a template writes them into attributes and ``<text>`` elements with autoescape on, so a
label from outside (a host name) is text, never markup, and the page needs no script and no
external resource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "BAR_HEIGHT",
    "BAR_WIDTH",
    "HEIGHT",
    "LABEL_CHARS",
    "PAD",
    "WIDTH",
    "bar_chart",
    "chart_history",
    "chart_km",
]

WIDTH: Final = 640
"""Width of a chart (px)."""
HEIGHT: Final = 240
"""Height of a line chart (px)."""
PAD: Final = 40
"""Room for the axes' labels around a line chart's plot area (px)."""
BAR_WIDTH: Final = 560
"""Width of a bar chart (px): two fit side by side on a page."""
BAR_HEIGHT: Final = 18
"""Height of one bar of a bar chart (px)."""
BAR_GAP: Final = 6
"""Space between two bars (px)."""
LABEL_WIDTH: Final = 170
"""Room for the bars' labels, left of the bars (px)."""
VALUE_WIDTH: Final = 90
"""Room for each bar's value, right of the longest bar (px)."""
LABEL_CHARS: Final = 24
"""A longer label is cut to this many characters (the whole label is the bar's tooltip)."""


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
            {"x": _x(x_max * f, x_max), "text": _days(x_max * f, x_max)}
            for f in (0, 0.25, 0.5, 0.75, 1)
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


def _days(value: float, span: float) -> str:
    """An axis label of ``value`` days on an axis ``span`` days long: hours under a day (so a
    short history does not read 0, 0, 0), one decimal under ten days, whole days above."""
    if span < 1:
        return f"{value * 24:.1f} h"
    return f"{value:.1f}" if span < 10 else f"{value:.0f}"


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def bar_chart(bars: Sequence[Mapping[str, Any]], *, color: str = "#2d4f8f") -> dict[str, Any]:
    """Horizontal bars, one per entry of ``bars``, as SVG geometry.

    Each entry has ``label`` (any text; cut to :data:`LABEL_CHARS` for display, whole in
    ``title``), ``value`` (a number >= 0; a negative or missing one draws no bar) and
    optionally ``text`` (what to print beside the bar; default the value) and ``color``.
    Bars are scaled to the largest value and listed in the given order.

    Returns:
        ``width``, ``height``, ``label_width`` (x of the bars' start), ``bar_height``,
        ``axis_bottom`` and
        ``bars``: each with ``label``, ``title``, ``text``, ``color``, ``y`` (top of the bar),
        ``text_y`` (baseline of its texts), ``w`` (bar width) and ``value_x`` (x of the value).
    """
    span = BAR_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    values = [max(float(b.get("value") or 0.0), 0.0) for b in bars]
    top = max(values, default=0.0)
    out: list[dict[str, Any]] = []
    for i, (bar, value) in enumerate(zip(bars, values, strict=True)):
        y = BAR_GAP + i * (BAR_HEIGHT + BAR_GAP)
        w = round(span * value / top, 1) if top else 0.0
        label = str(bar.get("label", ""))
        text = bar.get("text")
        out.append(
            {
                "label": _short(label),
                "title": label,
                "text": str(text) if text is not None else f"{value:g}",
                "color": str(bar.get("color") or color),
                "y": y,
                "text_y": y + BAR_HEIGHT - 5,
                "w": w,
                "value_x": round(LABEL_WIDTH + w + 6, 1),
            }
        )
    height = BAR_GAP + max(len(out), 1) * (BAR_HEIGHT + BAR_GAP)
    return {
        "width": BAR_WIDTH,
        "height": height,
        "label_width": LABEL_WIDTH,
        "bar_height": BAR_HEIGHT,
        "axis_bottom": height - BAR_GAP // 2,
        "bars": out,
    }
