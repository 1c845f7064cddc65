"""Reports of a scan run: one JSON document (the stable contract), CSV and Markdown renderings.

The JSON document (``schema: patchpilot.report/v1``) is what ``scan --format json`` and
``report --format json`` print. Fields are only ever added within a schema version. Its model
is :class:`patchpilot.app.documents.ReportDocument`; its JSON Schema is committed as
``schemas/patchpilot.report.v1.json`` and checked against what this module emits.

Report values come from outside (host output, feeds, inventories), so every rendering makes
them inert: JSON escapes control characters itself; CSV cells get control characters shown as
visible escapes (:func:`patchpilot.core.text.inert`) and, against spreadsheet formula injection, a
``'`` before a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
(OWASP's advice; such a cell cannot be a formula when the file is opened in a spreadsheet);
Markdown cells are inert and have Markdown and HTML syntax escaped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from patchpilot.core.feeds import FeedStatus
from patchpilot.core.models import PendingUpdate
from patchpilot.core.store import FindingRecord, HostResult, RunRecord
from patchpilot.core.text import inert

__all__ = [
    "CSV_COLUMNS",
    "UNREACHABLE_ERRORS",
    "finding_json",
    "host_json",
    "render_csv",
    "render_markdown",
    "report_document",
]

SCHEMA = "patchpilot.report/v1"

UNREACHABLE_ERRORS = frozenset({"HostConnectError"})
"""Error types that mean the host could not be reached at all (status ``unreachable``); any
other error on a host (host key, authentication, a command) is status ``failed``."""


def host_status(result: HostResult) -> str:
    """``ok``, ``unreachable`` or ``failed``."""
    if result.ok:
        return "ok"
    return "unreachable" if result.error_type in UNREACHABLE_ERRORS else "failed"


def pending_json(update: PendingUpdate) -> dict[str, Any]:
    """One pending update in the report contract (see the README)."""
    return {
        "package": update.name,
        "arch": update.arch,
        "source_package": update.source_name,
        "installed": update.installed_version,
        "candidate": update.candidate_version,
        "origin": update.origin.value,
        "origins": list(update.origins),
        "security": update.security,
        "cves": list(update.cves),
        "cves_from": update.cves_from,
    }


def host_json(result: HostResult) -> dict[str, Any]:
    """One host in the report contract: discovery status, facts and pending updates.

    ``host``, ``ok``, ``error_type``, ``message`` and ``package_count`` are kept from the first
    version of the document; ``name``, ``status``, ``error`` and the rest were added with
    fleet discovery. Facts are ``None`` when the host was not reached.
    """
    f = result.facts
    return {
        "name": result.host,
        "status": host_status(result),
        "error": result.message,
        "host": result.host,
        "ok": result.ok,
        "error_type": result.error_type,
        "message": result.message,
        "warnings": list(result.warnings),
        "package_count": result.package_count,
        "os": None if f is None else (f.os.pretty_name or f"{f.os.id} {f.os.version_id or ''}"),
        "os_release": None
        if f is None
        else {
            "id": f.os.id,
            "version_id": f.os.version_id,
            "codename": f.os.version_codename,
            "family": f.os.family.value,
        },
        "kernel": None if f is None else f.kernel,
        "reboot_required": None if f is None else f.reboot_required,
        "reboot_required_pkgs": None if f is None else list(f.reboot_required_pkgs),
        "held_packages": None if f is None or f.held_packages is None else list(f.held_packages),
        "needs_restart": None
        if f is None or f.deleted_library_users is None
        else [u.model_dump(mode="json") for u in f.deleted_library_users],
        "services_needing_restart": None
        if f is None or f.services_needing_restart is None
        else list(f.services_needing_restart),
        "listening": None
        if f is None or f.listening is None
        else [s.model_dump(mode="json") for s in f.listening],
        "apt_sources": None
        if f is None or f.apt_sources is None
        else [
            {"uri": s.uri, "dist": s.dist, "component": s.component, "kind": s.kind.value}
            for s in f.apt_sources
        ],
        "pending_updates": [pending_json(u) for u in result.pending],
    }


def finding_json(record: FindingRecord) -> dict[str, Any]:
    """One finding in the report contract (see the README)."""
    f = record.finding
    binaries = sorted(f.binary_packages)
    risk = record.risk
    return {
        "host": f.host,
        "package": binaries[0] if binaries else f.source_package,
        "packages": binaries,
        "source_package": f.source_package,
        "installed_version": f.installed_source_version,
        "fixed_version": f.fixed_version,
        "fix_state": f.fix.status.value,
        "fix_reachable": f.fix_reachable,
        "installable": f.fix_reachable is True,
        "actionable": f.actionable,
        "advisory": f.advisory_id,
        "cves": list(f.cves),
        "severity": f.severity.value,
        "kev": record.kev,
        "first_seen": f.first_seen.isoformat(),
        "provenance": [p.model_dump(mode="json") for p in f.provenance],
        "risk": None
        if risk is None
        else {
            "score": round(risk.score, 1),
            "ssvc": risk.ssvc.value,
            "due": risk.due_date.isoformat() if risk.due_date else None,
            "rationale": risk.rationale,
            "factors": [factor.model_dump(mode="json") for factor in risk.factors],
        },
    }


def report_document(
    *,
    run: RunRecord | None,
    records: Sequence[FindingRecord],
    feeds: Sequence[FeedStatus],
    hosts: Sequence[HostResult] = (),
    mode: str | None = None,
    hint: str | None = None,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The whole report as a JSON-ready dict."""
    stale = sorted({s.kind.value for s in feeds if s.stale})
    return {
        "schema": SCHEMA,
        "generated_at": generated_at.isoformat() if generated_at else None,
        "run": None if run is None else run.model_dump(mode="json"),
        "data": {
            "mode": mode,
            "feeds": [s.model_dump(mode="json") for s in feeds],
            "stale_feeds": stale,
            "hint": hint,
        },
        "hosts": [host_json(h) for h in hosts],
        "findings": [finding_json(r) for r in records],
        "summary": {
            "findings": len(records),
            "actionable": sum(r.finding.actionable for r in records),
            "kev": sum(r.kev for r in records),
            "hosts_with_findings": len({r.finding.host for r in records}),
        },
    }


CSV_COLUMNS = (
    "host",
    "package",
    "source_package",
    "installed_version",
    "fixed_version",
    "fix_state",
    "actionable",
    "advisory",
    "cves",
    "severity",
    "kev",
    "score",
    "ssvc",
    "due",
    "rationale",
)


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
"""Cell prefixes a spreadsheet may read as a formula (OWASP CSV injection)."""


def csv_cell(value: object) -> object:
    """A CSV cell: non-strings as they are; strings inert and never a spreadsheet formula."""
    if not isinstance(value, str):
        return value
    if value.startswith(_FORMULA_START):
        value = "'" + value
    return inert(value)


def _flat(record: FindingRecord) -> dict[str, Any]:
    data = finding_json(record)
    risk = data.pop("risk") or {}
    data["cves"] = " ".join(data["cves"])
    data.update(
        score=risk.get("score"),
        ssvc=risk.get("ssvc"),
        due=risk.get("due"),
        rationale=risk.get("rationale"),
    )
    return {k: csv_cell(data.get(k)) for k in CSV_COLUMNS}


def render_csv(records: Sequence[FindingRecord]) -> str:
    """Findings as CSV (one row per finding; CVEs space-separated; cells made safe by
    :func:`csv_cell`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow(_flat(r))
    return buf.getvalue()


_MD_SPECIAL: Final = re.compile(r"([\\`*_\[\]|~])")
"""What can start code, emphasis, strikethrough, a link or image, or a new column in a cell."""


def _md(text: object) -> str:
    """A value as literal text in a Markdown table cell (feed and host text is untrusted).

    One line; control characters shown as escapes; Markdown syntax (links, emphasis, code,
    ``|``) backslash-escaped and ``<``, ``>``, ``&`` as HTML entities, so no cell can become a
    link, an image, HTML or a new column.
    """
    flat = inert(str(text if text is not None else "").replace("\r\n", " ").replace("\n", " "))
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", flat)


def render_markdown(document: dict[str, Any]) -> str:
    """The report document as Markdown (for tickets and wikis)."""
    lines = ["# patchpilot report", ""]
    run = document.get("run")
    if run:
        lines.append(f"Run {_md(run['run_id'])} ({_md(run['status'])}) on {_md(run['target'])}.")
    data = document["data"]
    if data.get("mode") == "repository-metadata":
        lines.append("")
        lines.append(f"> **Note:** {_md(data.get('hint'))}")
    if data.get("stale_feeds"):
        lines.append("")
        lines.append(f"> **Stale feeds:** {_md(', '.join(data['stale_feeds']))}")
    summary = document["summary"]
    lines += [
        "",
        f"**{summary['findings']} findings** ({summary['actionable']} actionable, "
        f"{summary['kev']} in CISA KEV) on {summary['hosts_with_findings']} host(s).",
        "",
        "| score | ssvc | due | host | source package | installed | fixed in | advisory | CVEs |",
        "|---:|---|---|---|---|---|---|---|---|",
    ]
    for f in document["findings"]:
        risk = f["risk"] or {}
        cves = ", ".join(f["cves"][:5]) + (" …" if len(f["cves"]) > 5 else "")
        lines.append(
            "| "
            + " | ".join(
                _md(v)
                for v in (
                    risk.get("score", ""),
                    risk.get("ssvc", ""),
                    risk.get("due", ""),
                    f["host"],
                    f["source_package"],
                    f["installed_version"],
                    f["fixed_version"] or f["fix_state"],
                    f["advisory"],
                    cves,
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
