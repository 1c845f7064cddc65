"""What the SARIF and CycloneDX exports share: where an advisory is described, which CVEs a
report names, the EPSS and CVSS of a finding, and its fingerprint.

Every value read here comes from a ``patchpilot.report/v1`` document (see
:mod:`patchpilot.app.documents`) and the store's CVE enrichment; nothing is fetched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote

from patchpilot.core.models import CVE_RE, CVSS, EPSS, Enrichment
from patchpilot.core.text import inert

__all__ = [
    "DEBIAN_TRACKER",
    "INFORMATION_URI",
    "NVD_URL",
    "OSV_URL",
    "advisory_url",
    "best_cvss",
    "best_epss",
    "cve_url",
    "fingerprint",
    "in_triage",
    "inert_tree",
    "reachability",
    "report_cves",
    "vulnerability_ids",
]

INFORMATION_URI: Final = "https://patchpilot.dev"
"""The project's URI (as in the ``$id`` of the committed JSON Schemas)."""
DEBIAN_TRACKER: Final = "https://security-tracker.debian.org/tracker/"
"""The Debian security tracker: a page per CVE, DSA and DLA id."""
OSV_URL: Final = "https://osv.dev/vulnerability/"
"""OSV.dev: a page per OSV record id."""
NVD_URL: Final = "https://nvd.nist.gov/vuln/detail/"
"""NVD: a page per CVE."""


_DEBIAN_IDS: Final = ("DSA-", "DLA-", "DTSA-")
"""Advisory ids only Debian issues (the tracker has a page for each)."""


def _feeds(finding: Mapping[str, Any]) -> set[str]:
    return {str(p.get("feed", "")) for p in finding.get("provenance", [])}


def advisory_url(finding: Mapping[str, Any]) -> str | None:
    """A page describing the finding's advisory: the Debian tracker for Debian feeds' records,
    OSV.dev for OSV records; None for findings read from repository metadata alone."""
    advisory = str(finding["advisory"])
    feeds = _feeds(finding)
    if advisory.startswith(_DEBIAN_IDS) or any(feed.startswith("debian") for feed in feeds):
        return DEBIAN_TRACKER + quote(advisory, safe="")
    if "osv" in feeds:
        return OSV_URL + quote(advisory, safe="")
    return None


def cve_url(cve: str) -> str:
    """The NVD page of a CVE."""
    return NVD_URL + quote(cve, safe="")


def vulnerability_ids(finding: Mapping[str, Any]) -> list[str]:
    """The vulnerabilities a finding is about: its CVEs (the advisory id first when it is
    one), else the advisory id itself."""
    advisory = str(finding["advisory"])
    ids = [advisory] if CVE_RE.match(advisory) else []
    ids += [str(c) for c in finding.get("cves", [])]
    return list(dict.fromkeys(ids)) or [advisory]


def report_cves(document: Mapping[str, Any]) -> set[str]:
    """Every CVE id a report's findings name (for :meth:`Store.enrichment`)."""
    return {
        vid
        for finding in document.get("findings", [])
        for vid in vulnerability_ids(finding)
        if CVE_RE.match(vid)
    }


def in_triage(finding: Mapping[str, Any]) -> bool:
    """Whether the finding was only inferred (a pending security update, no advisory said so):
    every provenance record has a confidence below ``exact``."""
    provenance = finding.get("provenance", [])
    return bool(provenance) and all(p.get("confidence") != "exact" for p in provenance)


def best_epss(enrichment: Mapping[str, Enrichment], cves: Iterable[str]) -> EPSS | None:
    """The highest EPSS probability among ``cves``."""
    scores = [e.epss for c in cves if (e := enrichment.get(c)) is not None and e.epss]
    return max(scores, key=lambda s: s.probability, default=None)


def best_cvss(enrichment: Mapping[str, Enrichment], cves: Iterable[str]) -> CVSS | None:
    """The highest base score among the newest CVSS version of each of ``cves``."""
    scores = [c for cve in cves if (e := enrichment.get(cve)) and (c := e.best_cvss) is not None]
    return max(scores, key=lambda s: s.base_score, default=None)


def reachability(finding: Mapping[str, Any]) -> str:
    """Whether the host can install a finding's fix, in words."""
    reachable = finding.get("fix_reachable")
    if reachable is True:
        return "offered by the host's repositories"
    if reachable is False:
        return "not offered by the host's repositories yet"
    return "availability on the host unknown"


def inert_tree(value: Any) -> Any:
    """``value`` (JSON data) with every string made inert (:func:`inert`), keys included."""
    if isinstance(value, str):
        return inert(value)
    if isinstance(value, Mapping):
        return {inert(str(k)): inert_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [inert_tree(v) for v in value]
    return value


def fingerprint(finding: Mapping[str, Any]) -> str:
    """A stable identity of a finding across runs: SHA-256 of ``host|source package|advisory``
    (the store's finding key), so re-scans match the same alert."""
    key = f"{finding['host']}|{finding['source_package']}|{finding['advisory']}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
