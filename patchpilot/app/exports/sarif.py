"""A report as SARIF 2.1.0 (GitHub code scanning, DefectDojo, any SARIF viewer).

One ``run`` whose ``tool.driver`` is patchpilot with one rule per advisory (its id, the source
packages and CVEs it names, a help text and the page that describes it) and one ``result`` per
finding:

- ``level`` from the finding's severity: critical and high -> ``error``, medium -> ``warning``,
  low and unimportant -> ``note``, **unknown -> ``warning``** (never ``none``: an unknown
  severity is not a low one);
- ``message``: host, package, installed -> fixed version and the fix state;
- ``locations``: a host has no source file, so, as Trivy and Grype do for OS packages, the
  location is the host's package database (``HOST/var/lib/dpkg/status``, ``var/lib/rpm``,
  ``lib/apk/db/installed``) relative to the ``PATCHPILOT_HOSTS`` base (declared in
  ``originalUriBaseIds``), with ``startLine`` 1 (SARIF viewers need a region), and a logical
  location ``HOST/PACKAGE``;
- ``partialFingerprints.patchpilotFinding/v1``: SHA-256 of ``host|source package|advisory``,
  stable across runs, so a re-scan updates the same alert;
- ``properties``: purl, versions, fix state, CVEs, KEV, EPSS (the highest of its CVEs), CVSS,
  risk score, SSVC decision and due date;
- an accepted finding (``accepted`` in the report) carries an ``accepted`` external suppression
  with who accepted it, why and until when.

Rules carry GitHub's ``security-severity`` (critical 9.5, high 8.0, medium 5.5, low 2.0; for an
unknown severity the highest CVSS base score of the advisory's CVEs, else none). Hosts the scan
could not reach become ``toolExecutionNotifications`` of the invocation.

Text from hosts and feeds is made inert (control characters shown as escapes) before it is
written. The document validates against the OASIS SARIF 2.1.0 schema (a unit test checks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from packageurl import PackageURL

from patchpilot import __version__
from patchpilot.app.exports.common import (
    INFORMATION_URI,
    advisory_url,
    best_cvss,
    best_epss,
    fingerprint,
    in_triage,
    inert_tree,
    reachability,
    vulnerability_ids,
)
from patchpilot.core.models import CVE_RE, Enrichment, Severity
from patchpilot.core.text import inert

__all__ = ["HOSTS_BASE", "SARIF_SCHEMA", "SARIF_VERSION", "level", "render_sarif", "sarif_log"]

SARIF_VERSION: Final = "2.1.0"
SARIF_SCHEMA: Final = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
HOSTS_BASE: Final = "PATCHPILOT_HOSTS"
"""The ``uriBaseId`` of result locations: ``HOST/path`` is a file on that host."""
FINGERPRINT_KEY: Final = "patchpilotFinding/v1"

_LEVELS: Final[Mapping[str, str]] = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.UNIMPORTANT: "note",
    Severity.UNKNOWN: "warning",
}
_SECURITY_SEVERITY: Final[Mapping[str, float]] = {
    Severity.CRITICAL: 9.5,
    Severity.HIGH: 8.0,
    Severity.MEDIUM: 5.5,
    Severity.LOW: 2.0,
    Severity.UNIMPORTANT: 0.5,
}
_PACKAGE_DB: Final[Mapping[str, str]] = {
    "deb": "var/lib/dpkg/status",
    "rpm": "var/lib/rpm",
    "apk": "lib/apk/db/installed",
}
_FIX_TEXT: Final[Mapping[str, str]] = {
    "no-fix-yet": "no fixed version yet",
    "will-not-fix": "the distribution will not fix it",
    "deferred": "the distribution deferred the fix",
    "end-of-life": "the release is end-of-life: no fix will come",
    "not-affected": "the distribution says the package is not affected",
    "unimportant": "the distribution rates it unimportant",
}


def level(severity: str) -> str:
    """The SARIF level of a severity (an unknown one is a ``warning``)."""
    return _LEVELS.get(severity, "warning")


def _rank(severity: str) -> int:
    try:
        return Severity(severity).rank
    except ValueError:
        return Severity.UNKNOWN.rank


def _package_db(purl: str | None) -> str:
    if purl:
        try:
            return _PACKAGE_DB.get(PackageURL.from_string(purl).type, "")
        except ValueError:
            return ""
    return ""


def _fix_text(finding: Mapping[str, Any]) -> str:
    state = str(finding["fix_state"])
    fixed = finding.get("fixed_version")
    if state == "fixed" and fixed:
        return reachability(finding)
    if state == "held" and fixed:
        return f"{reachability(finding)}, but the host holds the package (apt-mark hold)"
    return _FIX_TEXT.get(state, inert(state))


def _message(finding: Mapping[str, Any]) -> str:
    """``web-1: libssl3 (source openssl) 3.0.11-1 -> 3.0.15-1: DSA-5900-1 (CVE-...); fixed,
    offered by the host's repositories.``"""
    host = inert(str(finding["host"]))
    package = inert(str(finding["package"]))
    source = inert(str(finding["source_package"]))
    installed = inert(str(finding["installed_version"]))
    fixed = finding.get("fixed_version")
    arrow = f"{installed} -> {inert(str(fixed))}" if fixed else installed
    cves = [c for c in vulnerability_ids(finding) if c != finding["advisory"]]
    about = inert(str(finding["advisory"])) + (f" ({', '.join(cves)})" if cves else "")
    origin = f" (source {source})" if source != package else ""
    state = inert(str(finding["fix_state"]))
    text = f"{host}: {package}{origin} {arrow}: {about}; {state}, {_fix_text(finding)}."
    if in_triage(finding):
        text += " Inferred from a pending security update, not from an advisory."
    return text


def _security_severity(
    severity: str, cves: list[str], enrichment: Mapping[str, Enrichment]
) -> str | None:
    score = _SECURITY_SEVERITY.get(severity)
    if score is None:
        cvss = best_cvss(enrichment, cves)
        score = None if cvss is None else cvss.base_score
    return None if score is None else f"{score:.1f}"


def _rules(
    findings: list[dict[str, Any]], enrichment: Mapping[str, Enrichment]
) -> list[dict[str, Any]]:
    by_advisory: dict[str, list[dict[str, Any]]] = {}
    for finding in findings:
        by_advisory.setdefault(str(finding["advisory"]), []).append(finding)
    rules = []
    for advisory, group in by_advisory.items():
        severity = max((str(f["severity"]) for f in group), key=_rank)
        cves = list(dict.fromkeys(c for f in group for c in vulnerability_ids(f)))
        cves = [c for c in cves if CVE_RE.match(c)]
        sources = sorted({inert(str(f["source_package"])) for f in group})
        name = inert(advisory)
        short = f"{name} in {', '.join(sources)}"
        full = short + (f": {', '.join(cves)}" if cves else "") + "."
        url = advisory_url(group[0])
        help_text = (
            f"{full} Install the fixed version of the package on each host the result names "
            "(patchpilot run plans and deploys it), or accept the risk with a reason and an "
            "expiry." + (f" Details: {url}" if url else "")
        )
        rule: dict[str, Any] = {
            "id": name,
            "name": name,
            "shortDescription": {"text": short},
            "fullDescription": {"text": full},
            "help": {"text": help_text},
            "defaultConfiguration": {"level": level(severity)},
            "properties": {
                "tags": ["security", "vulnerability", "os-package"],
                "severity": severity,
                "cves": cves,
            },
        }
        if url:
            rule["helpUri"] = url
        security_severity = _security_severity(severity, cves, enrichment)
        if security_severity is not None:
            rule["properties"]["security-severity"] = security_severity
        rules.append(rule)
    return rules


def _suppressions(finding: Mapping[str, Any]) -> list[dict[str, Any]]:
    accepted = finding.get("accepted")
    if not isinstance(accepted, Mapping):
        return []
    who = inert(str(accepted.get("by") or "unknown"))
    until = inert(str(accepted.get("until") or "unknown"))
    reason = inert(str(accepted.get("reason") or ""))
    return [
        {
            "kind": "external",
            "status": "accepted",
            "justification": f"risk accepted by {who} until {until}: {reason}",
            "properties": {"acceptance": inert_tree(dict(accepted))},
        }
    ]


def _result(
    finding: dict[str, Any], rule_index: int, enrichment: Mapping[str, Enrichment]
) -> dict[str, Any]:
    host = str(finding["host"])
    package = str(finding["package"])
    cves = [c for c in vulnerability_ids(finding) if CVE_RE.match(c)]
    epss = best_epss(enrichment, cves)
    cvss = best_cvss(enrichment, cves)
    risk = finding.get("risk") or {}
    db = _package_db(finding.get("purl"))
    uri = quote(host, safe="") + (f"/{db}" if db else "")
    result: dict[str, Any] = {
        "ruleId": inert(str(finding["advisory"])),
        "ruleIndex": rule_index,
        "kind": "fail",
        "level": level(str(finding["severity"])),
        "message": {"text": _message(finding)},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": uri, "uriBaseId": HOSTS_BASE},
                    "region": {"startLine": 1},
                },
                "logicalLocations": [
                    {
                        "name": inert(package),
                        "fullyQualifiedName": inert(f"{host}/{package}"),
                        "kind": "module",
                    }
                ],
            }
        ],
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint(finding)},
        "properties": inert_tree(
            {
                "host": host,
                "purl": finding.get("purl"),
                "package": package,
                "packages": list(finding.get("packages", [])),
                "source_package": finding["source_package"],
                "installed_version": finding["installed_version"],
                "fixed_version": finding.get("fixed_version"),
                "fix_state": finding["fix_state"],
                "fix_reachable": finding.get("fix_reachable"),
                "actionable": finding.get("actionable"),
                "severity": finding["severity"],
                "cves": list(finding.get("cves", [])),
                "kev": finding.get("kev"),
                "epss": None if epss is None else epss.probability,
                "epss_percentile": None if epss is None else epss.percentile,
                "cvss": None if cvss is None else cvss.base_score,
                "cvss_vector": None if cvss is None else cvss.vector,
                "risk_score": risk.get("score"),
                "ssvc": risk.get("ssvc"),
                "due": risk.get("due"),
                "first_seen": finding.get("first_seen"),
            }
        ),
    }
    suppressions = _suppressions(finding)
    if suppressions:
        result["suppressions"] = suppressions
    return result


def _utc(moment: object) -> str | None:
    """An ISO 8601 time as SARIF writes it: UTC, ``Z``."""
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return None
    if not isinstance(moment, datetime):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _notifications(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    notes: list[dict[str, Any]] = []
    for host in document.get("hosts", []):
        if host.get("status") != "ok":
            text = f"{host['name']} {host['status']}: {host.get('error') or 'no reason given'}"
            notes.append({"level": "error", "message": {"text": inert(text)}})
    stale = document.get("data", {}).get("stale_feeds") or []
    if stale:
        text = f"stale feeds: {', '.join(stale)} (run `patchpilot feeds update`)"
        notes.append({"level": "warning", "message": {"text": inert(text)}})
    hint = document.get("data", {}).get("hint")
    if hint:
        notes.append({"level": "warning", "message": {"text": inert(str(hint))}})
    return notes


def sarif_log(
    document: Mapping[str, Any], enrichment: Mapping[str, Enrichment] | None = None
) -> dict[str, Any]:
    """A ``patchpilot.report/v1`` document as a SARIF 2.1.0 log (a JSON-ready dict).

    Args:
        document: the report (as :func:`patchpilot.app.report.report_document` builds it).
        enrichment: CVE -> CVSS/EPSS/KEV data (``Store.enrichment``); EPSS and CVSS are
            omitted without it.
    """
    known = enrichment or {}
    findings = list(document.get("findings", []))
    rules = _rules(findings, known)
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    rule_of = {str(f["advisory"]): inert(str(f["advisory"])) for f in findings}
    invocation: dict[str, Any] = {"executionSuccessful": True}
    end = _utc(document.get("generated_at"))
    if end is not None:
        invocation["endTimeUtc"] = end
    notifications = _notifications(document)
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    run = document.get("run") or {}
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "patchpilot",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "invocations": [invocation],
                "originalUriBaseIds": {
                    HOSTS_BASE: {
                        "description": {
                            "text": "The fleet's hosts: HOST/PATH is the file PATH on host HOST."
                        }
                    }
                },
                "results": [
                    _result(f, index[rule_of[str(f["advisory"])]], known) for f in findings
                ],
                "properties": {
                    "report_schema": document.get("schema"),
                    "run_id": run.get("run_id"),
                    "mode": document.get("data", {}).get("mode"),
                    "summary": document.get("summary"),
                },
            }
        ],
    }


def render_sarif(
    document: Mapping[str, Any], enrichment: Mapping[str, Enrichment] | None = None
) -> str:
    """:func:`sarif_log` as JSON text (what ``--format sarif`` writes)."""
    return json.dumps(sarif_log(document, enrichment), indent=2, default=str) + "\n"
