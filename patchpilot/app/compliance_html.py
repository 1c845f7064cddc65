"""The compliance document as one self-contained HTML page an auditor can open offline.

One file: inline CSS, two inline SVG charts (the Kaplan-Meier time-to-remediate curve, the open
and overdue counts over time), no script, no external resource. The template
(``templates/compliance.html``) is rendered by Jinja2 with autoescape on, so every value from
outside (host and package names, advisory ids, acceptance reasons) is text; the charts'
geometry is numbers computed by :mod:`patchpilot.app.svg`, the one home of the chart code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from patchpilot.app.svg import HEIGHT, PAD, WIDTH, chart_history, chart_km

__all__ = ["TEMPLATES", "chart_history", "chart_km", "offline_environment", "render"]

TEMPLATES: Final = Path(__file__).parent / "templates"


def offline_environment() -> Environment:
    """The Jinja2 environment of the self-contained HTML pages (compliance, reports):
    :data:`TEMPLATES`, autoescape everywhere, undefined names are errors."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(document: Mapping[str, Any]) -> str:
    """The page of a ``patchpilot.compliance/v1`` document."""
    template = offline_environment().get_template("compliance.html")
    return template.render(
        doc=document,
        km=chart_km(document["survival"]["curve"]),
        hist=chart_history(document["history"]),
        width=WIDTH,
        height=HEIGHT,
        pad=PAD,
    )
