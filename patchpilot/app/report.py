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
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from patchpilot.app.grouping import fix_groups
from patchpilot.core.acceptance import Acceptance, Acceptances
from patchpilot.core.feeds import FeedStatus
from patchpilot.core.models import Finding, OSInfo, PendingUpdate
from patchpilot.core.purl import source_purl
from patchpilot.core.store import FindingRecord, HostResult, RunRecord
from patchpilot.core.text import inert

__all__ = [
    "CSV_COLUMNS",
    "UNREACHABLE_ERRORS",
    "data_quality_json",
    "finding_json",
    "finding_purl",
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
        "held": update.held,
        "urgency": None if update.urgency is None else update.urgency.value,
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


def finding_purl(finding: Finding, os: OSInfo | None) -> str | None:
    """The purl of the source package a finding is about, on a host running ``os``.

    ``pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=source&distro=debian-12``; None when the
    host's OS (so its ecosystem and vendor) is not known.
    """
    ecosystem = None if os is None else os.family.ecosystem
    if ecosystem is None:
        return None
    return source_purl(ecosystem, finding.source_package, finding.installed_source_version, os)


def finding_json(
    record: FindingRecord, os: OSInfo | None = None, accepted: Acceptance | None = None
) -> dict[str, Any]:
    """One finding in the report contract (see the README); ``os``: the host's OS (purl);
    ``accepted``: the live risk acceptance covering it (``accepted`` is null without one)."""
    f = record.finding
    binaries = sorted(f.binary_packages)
    risk = record.risk
    return {
        "host": f.host,
        "package": binaries[0] if binaries else f.source_package,
        "packages": binaries,
        "source_package": f.source_package,
        "purl": finding_purl(f, os),
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
        "accepted": None if accepted is None else accepted.summary(),
    }


def data_quality_json(run: RunRecord | None) -> list[dict[str, Any]]:
    """The run's data-quality warnings (``data.data_quality``): versions no ordering applies to.

    Each is ``{source, record, package, version, problem, hosts}``, as the scan's report step
    summarised them (:func:`patchpilot.graphs.scan.data_quality_summary`); ``[]`` for a report
    without a run or a run recorded before they existed.
    """
    if run is None or not run.summary:
        return []
    entries = run.summary.get("data_quality")
    return [dict(e) for e in entries] if isinstance(entries, list) else []


def report_document(
    *,
    run: RunRecord | None,
    records: Sequence[FindingRecord],
    feeds: Sequence[FeedStatus],
    hosts: Sequence[HostResult] = (),
    mode: str | None = None,
    hint: str | None = None,
    generated_at: datetime | None = None,
    os_by_host: Mapping[str, OSInfo] | None = None,
    acceptances: Acceptances | None = None,
) -> dict[str, Any]:
    """The whole report as a JSON-ready dict.

    Each finding's ``purl`` needs its host's OS: from ``hosts`` (their facts) or else from
    ``os_by_host`` (a report of stored findings has no hosts). ``acceptances`` (the accept
    file as it stands on the report's day) marks accepted findings: they stay in the report
    with ``accepted`` set, and ``summary.accepted`` counts them.
    """
    accepted = _accepted(records, acceptances)
    stale = sorted({s.kind.value for s in feeds if s.stale})
    os_of = dict(os_by_host or {})
    os_of.update({h.host: h.facts.os for h in hosts if h.facts is not None})
    ecosystems = {
        host: os.family.ecosystem for host, os in os_of.items() if os.family.ecosystem is not None
    }
    fixes = fix_groups(records, ecosystems, [a.until if a else None for a in accepted])
    return {
        "schema": SCHEMA,
        "generated_at": generated_at.isoformat() if generated_at else None,
        "run": None if run is None else run.model_dump(mode="json"),
        "data": {
            "mode": mode,
            "feeds": [s.model_dump(mode="json") for s in feeds],
            "stale_feeds": stale,
            "hint": hint,
            "data_quality": data_quality_json(run),
        },
        "hosts": [host_json(h) for h in hosts],
        "findings": [
            finding_json(r, os_of.get(r.finding.host), accepted[i]) for i, r in enumerate(records)
        ],
        "fixes": fixes,
        "summary": {
            "findings": len(records),
            "fixes": len(fixes),
            "actionable": sum(r.finding.actionable for r in records),
            "kev": sum(r.kev for r in records),
            "hosts_with_findings": len({r.finding.host for r in records}),
            "accepted": sum(a is not None for a in accepted),
        },
    }


def _accepted(
    records: Sequence[FindingRecord], acceptances: Acceptances | None
) -> list[Acceptance | None]:
    """The live acceptance of each record (None: not accepted), in order."""
    if not acceptances:
        return [None] * len(records)
    return [acceptances.for_finding(r.finding) for r in records]


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
    "accepted_until",
    "accepted_by",
    "accepted_reason",
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


def _flat(record: FindingRecord, accepted: Acceptance | None = None) -> dict[str, Any]:
    data = finding_json(record, accepted=accepted)
    risk = data.pop("risk") or {}
    if accepted is not None:
        data.update(
            accepted_until=accepted.until.isoformat(),
            accepted_by=accepted.by,
            accepted_reason=accepted.reason,
        )
    data["cves"] = " ".join(data["cves"])
    data.update(
        score=risk.get("score"),
        ssvc=risk.get("ssvc"),
        due=risk.get("due"),
        rationale=risk.get("rationale"),
    )
    return {k: csv_cell(data.get(k)) for k in CSV_COLUMNS}


def render_csv(records: Sequence[FindingRecord], acceptances: Acceptances | None = None) -> str:
    """Findings as CSV (one row per finding; CVEs space-separated; cells made safe by
    :func:`csv_cell`; ``accepted_*`` filled for a finding a live acceptance covers)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r, accepted in zip(records, _accepted(records, acceptances), strict=True):
        writer.writerow(_flat(r, accepted))
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
    if data.get("data_quality"):
        lines.append("")
        lines.append(
            f"> **Data quality:** {len(data['data_quality'])} record(s) with a version that "
            "cannot be ordered were not assessed: "
            + _md(
                "; ".join(
                    f"{w['record']} {w['package']} {w['version']!r} ({w['problem']})"
                    for w in data["data_quality"][:5]
                )
            )
        )
    summary = document["summary"]
    # an "accepted" column only when a finding is accepted (who, until when, why)
    accepted = any(f.get("accepted") for f in document["findings"])
    lines += [
        "",
        f"**{summary['findings']} findings** ({summary['actionable']} actionable, "
        f"{summary['kev']} in CISA KEV"
        + (f", {summary.get('accepted', 0)} accepted" if accepted else "")
        + f") on {summary['hosts_with_findings']} host(s).",
        "",
        "| score | ssvc | due | host | source package | installed | fixed in | advisory | CVEs |"
        + (" accepted |" if accepted else ""),
        "|---:|---|---|---|---|---|---|---|---|" + ("---|" if accepted else ""),
    ]
    for f in document["findings"]:
        risk = f["risk"] or {}
        cves = ", ".join(f["cves"][:5]) + (" …" if len(f["cves"]) > 5 else "")
        cells = [
            risk.get("score", ""),
            risk.get("ssvc", ""),
            risk.get("due", ""),
            f["host"],
            f["source_package"],
            f["installed_version"],
            f["fixed_version"] or f["fix_state"],
            f["advisory"],
            cves,
        ]
        if accepted:
            a = f.get("accepted")
            cells.append(f"until {a['until']} by {a['by']}: {a['reason']}" if a else "")
        lines.append("| " + " | ".join(_md(v) for v in cells) + " |")
    return "\n".join(lines) + "\n"
