"""Exports of a report for other tools: SARIF 2.1.0 and CycloneDX 1.6 with VEX.

The renderers are pure functions of a ``patchpilot.report/v1`` document (and, for CycloneDX,
the hosts' discovery snapshots; for both, the CVEs' CVSS/EPSS enrichment):
:func:`patchpilot.app.exports.sarif.render_sarif` and
:func:`patchpilot.app.exports.cyclonedx.render_cyclonedx`. The use cases here read what they
need from the store and render; every interface (the CLI's ``--format sarif|cyclonedx``) calls
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from patchpilot.app.exports.common import report_cves
from patchpilot.app.exports.hosts import report_snapshots
from patchpilot.core.store import Store

__all__ = ["cyclonedx_report", "sarif_report"]


def sarif_report(store: Store, document: Mapping[str, Any]) -> str:
    """The report as SARIF 2.1.0 JSON text (rules, results, EPSS and CVSS from the store)."""
    from patchpilot.app.exports.sarif import render_sarif

    return render_sarif(document, store.enrichment(report_cves(document)))


def cyclonedx_report(
    store: Store, document: Mapping[str, Any], *, run_id: str | None = None
) -> str:
    """The report as CycloneDX 1.6 JSON text: the hosts' installed packages as components
    (the snapshot the report describes: :func:`report_snapshots`; ``run_id`` for stored
    findings of one run) and the findings as vulnerabilities with VEX analysis."""
    from patchpilot.app.exports.cyclonedx import render_cyclonedx

    return render_cyclonedx(
        document,
        report_snapshots(store, document, run_id=run_id),
        store.enrichment(report_cves(document)),
    )
