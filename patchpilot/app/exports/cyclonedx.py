"""A report as a CycloneDX 1.6 JSON BOM with VEX (Dependency-Track, any CycloneDX consumer).

Built from a ``patchpilot.report/v1`` document and the discovery snapshots of its hosts
(:func:`patchpilot.app.exports.hosts.report_snapshots`); the metadata and the vulnerabilities
are `cyclonedx-python-lib`_ models serialised by the library as CycloneDX 1.6 JSON, the
components plain JSON objects (see the note above :class:`_Host`):

- ``metadata``: the report's time and the tools (patchpilot, cyclonedx-python-lib);
- ``components``: per host, one ``operating-system`` component (``bom-ref`` ``host:NAME``) and
  one ``library`` component per installed package (``bom-ref`` ``NAME|PURL``, unique per host
  and package) with its purl and source package; ``dependencies`` tie each host to its
  packages. A finding whose packages the snapshot does not list gets a component for its
  source package (the finding's purl, ``arch=source``);
- ``vulnerabilities``: one entry per CVE (the advisory id when it names none) and analysis:
  findings of the same CVE with the same analysis share one entry whose ``affects`` lists every
  affected package component of every host; ``ratings`` carry the distribution's severity and
  the CVSS scores known for the CVE; ``analysis`` is the VEX state (:func:`vex_analysis`);
  ``source``, ``references`` and ``advisories`` name NVD and the advisory's page.

.. _cyclonedx-python-lib: https://github.com/CycloneDX/cyclonedx-python-lib
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from cyclonedx.contrib.this.builders import this_component
from cyclonedx.contrib.vulnerability.cvss import vs_from_cvss_scores
from cyclonedx.model import Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.impact_analysis import (
    ImpactAnalysisJustification,
    ImpactAnalysisResponse,
    ImpactAnalysisState,
)
from cyclonedx.model.tool import ToolRepository
from cyclonedx.model.vulnerability import (
    BomTarget,
    Vulnerability,
    VulnerabilityAdvisory,
    VulnerabilityAnalysis,
    VulnerabilityRating,
    VulnerabilityReference,
    VulnerabilityScoreSource,
    VulnerabilitySeverity,
    VulnerabilitySource,
)
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from patchpilot import __version__
from patchpilot.app.exports.common import (
    DEBIAN_TRACKER,
    INFORMATION_URI,
    OSV_URL,
    advisory_url,
    best_epss,
    cve_url,
    in_triage,
    reachability,
    vulnerability_ids,
)
from patchpilot.core.models import CVE_RE, Enrichment, HostFacts, InstalledPackage, utcnow
from patchpilot.core.purl import package_purl
from patchpilot.core.store import HostSnapshot
from patchpilot.core.text import inert

__all__ = ["VexAnalysis", "cyclonedx_document", "render_cyclonedx", "vex_analysis"]

_SEVERITY: Final[Mapping[str, VulnerabilitySeverity]] = {
    "critical": VulnerabilitySeverity.CRITICAL,
    "high": VulnerabilitySeverity.HIGH,
    "medium": VulnerabilitySeverity.MEDIUM,
    "low": VulnerabilitySeverity.LOW,
    "unimportant": VulnerabilitySeverity.INFO,
    "unknown": VulnerabilitySeverity.UNKNOWN,
}
_CVSS_METHOD: Final[Mapping[str, VulnerabilityScoreSource]] = {
    "3.0": VulnerabilityScoreSource.CVSS_V3,
    "3.1": VulnerabilityScoreSource.CVSS_V3_1,
    "4.0": VulnerabilityScoreSource.CVSS_V4,
}
_NVD: Final = VulnerabilitySource(name="NVD", url=XsUri("https://nvd.nist.gov/"))
_DEBIAN: Final = VulnerabilitySource(name="Debian", url=XsUri(DEBIAN_TRACKER))
_OSV: Final = VulnerabilitySource(name="OSV", url=XsUri(OSV_URL))
_PATCHPILOT: Final = VulnerabilitySource(name="patchpilot", url=XsUri(INFORMATION_URI))

_CAN_NOT_FIX: Final = (ImpactAnalysisResponse.CAN_NOT_FIX,)
_WILL_NOT_FIX: Final = (ImpactAnalysisResponse.WILL_NOT_FIX,)
_FIX_STATES: Final[Mapping[str, tuple[tuple[ImpactAnalysisResponse, ...], str]]] = {
    "no-fix-yet": (_CAN_NOT_FIX, "no fixed version has been released yet"),
    "deferred": (_CAN_NOT_FIX, "the distribution deferred the fix (e.g. no-dsa, postponed)"),
    "will-not-fix": (_WILL_NOT_FIX, "the distribution will not fix it"),
    "end-of-life": (_WILL_NOT_FIX, "the release is end-of-life: upgrade the distribution"),
    "unimportant": (_WILL_NOT_FIX, "the distribution rates it unimportant and will not fix it"),
}


@dataclass(frozen=True)
class VexAnalysis:
    """The CycloneDX VEX analysis of one finding."""

    state: ImpactAnalysisState
    justification: ImpactAnalysisJustification | None
    responses: tuple[ImpactAnalysisResponse, ...]
    detail: str


def vex_analysis(finding: Mapping[str, Any], *, held: bool = False) -> VexAnalysis:
    """The VEX analysis of a finding (the mapping the README documents).

    - An accepted finding (``accepted`` in the report): ``exploitable``, ``will_not_fix``, with
      who accepted it, why and until when.
    - The distribution says the package is not affected: ``not_affected`` /
      ``code_not_present`` (findings never have that state today; kept for completeness).
    - Otherwise the host runs a vulnerable version: ``exploitable`` (CISA's VEX "affected"),
      or ``in_triage`` when the finding was only inferred from a pending security update (no
      advisory said so); the response is ``update`` when a fixed version exists (fix state
      ``fixed``, or ``held``: the detail says whether the host's repositories offer it and
      that the host holds the package),
      ``can_not_fix`` while there is none (no fix yet, deferred), ``will_not_fix`` when the
      distribution will not fix it (won't fix, end-of-life, unimportant).

    Args:
        finding: a finding of a ``patchpilot.report/v1`` document.
        held: one of its packages is held on the host (``apt-mark hold``).
    """
    state_text = str(finding["fix_state"])
    accepted = finding.get("accepted")
    if isinstance(accepted, Mapping):
        who = inert(str(accepted.get("by") or "unknown"))
        until = inert(str(accepted.get("until") or "unknown"))
        reason = inert(str(accepted.get("reason") or ""))
        return VexAnalysis(
            ImpactAnalysisState.EXPLOITABLE,
            None,
            _WILL_NOT_FIX,
            f"risk accepted by {who} until {until}: {reason}",
        )
    if state_text == "not-affected":
        return VexAnalysis(
            ImpactAnalysisState.NOT_AFFECTED,
            ImpactAnalysisJustification.CODE_NOT_PRESENT,
            (),
            "the distribution says this package is not affected",
        )
    state = ImpactAnalysisState.IN_TRIAGE if in_triage(finding) else ImpactAnalysisState.EXPLOITABLE
    fixed = finding.get("fixed_version")
    if state_text in ("fixed", "held") and fixed:
        detail = f"fixed in {inert(str(fixed))} ({reachability(finding)})"
        if held or state_text == "held":
            detail += "; the host holds the package (apt-mark hold): release the hold to update"
        responses: tuple[ImpactAnalysisResponse, ...] = (ImpactAnalysisResponse.UPDATE,)
    else:
        responses, detail = _FIX_STATES.get(state_text, ((), inert(state_text)))
    if state is ImpactAnalysisState.IN_TRIAGE:
        detail += "; inferred from a pending security update, not confirmed by an advisory"
    return VexAnalysis(state, None, responses, detail)


# --------------------------------------------------------------------------- components
#
# Components are JSON objects built here, not cyclonedx-python-lib models: the library's model
# costs about 2.7 ms per component and its serializer checks dependencies in quadratic time
# (a 3000-package host took 15 s), while a fleet report has thousands of packages per host.
# The whole document is checked against the CycloneDX 1.6 schema by the library's validator
# in the unit tests.


@dataclass
class _Host:
    """The components of one host (CycloneDX JSON objects)."""

    component: dict[str, Any]
    packages: list[dict[str, Any]]
    by_name: dict[str, list[dict[str, Any]]]


def _property_list(**values: object) -> list[dict[str, str]]:
    return [
        {"name": f"patchpilot:{key}", "value": inert(str(value))}
        for key, value in sorted(values.items())
        if value is not None and value != ""
    ]


def _properties(**values: object) -> list[Property]:
    return [Property(name=p["name"], value=p["value"]) for p in _property_list(**values)]


def _package_component(host: str, package: InstalledPackage, facts: HostFacts) -> dict[str, Any]:
    purl = package_purl(package, facts.os)
    component: dict[str, Any] = {
        "type": "library",
        "bom-ref": inert(f"{host}|{purl or f'{package.name}@{package.version}:{package.arch}'}"),
        "name": inert(package.name),
        "version": inert(package.version),
    }
    if purl:
        component["purl"] = purl
    component["properties"] = _property_list(
        host=host,
        arch=package.arch,
        source_name=package.source_name,
        source_version=package.source_version,
        ecosystem=package.ecosystem.value,
    )
    return component


def _host_component(name: str, facts: HostFacts | None, os_text: str | None) -> dict[str, Any]:
    os = None if facts is None else facts.os
    component: dict[str, Any] = {
        "type": "operating-system",
        "bom-ref": inert(f"host:{name}"),
        "name": inert(os.id) if os is not None and os.id else "unknown",
    }
    version = None if os is None else (os.version_id or os.version_codename)
    if version:
        component["version"] = inert(version)
    if os_text:
        component["description"] = inert(os_text)
    component["properties"] = _property_list(
        host=name,
        kernel=None if facts is None else facts.kernel,
        reboot_required=None if facts is None else str(facts.reboot_required).lower(),
    )
    return component


def _hosts(document: Mapping[str, Any], snapshots: Mapping[str, HostSnapshot]) -> dict[str, _Host]:
    os_text = {h["name"]: h.get("os") for h in document.get("hosts", [])}
    names = sorted(set(snapshots) | {f["host"] for f in document.get("findings", [])})
    hosts: dict[str, _Host] = {}
    for name in names:
        snapshot = snapshots.get(name)
        facts = None if snapshot is None else snapshot.facts
        packages: dict[str, dict[str, Any]] = {}
        if snapshot is not None:
            for package in snapshot.packages:
                component = _package_component(name, package, snapshot.facts)
                packages.setdefault(component["bom-ref"], component)
        by_name: dict[str, list[dict[str, Any]]] = {}
        for component in packages.values():
            by_name.setdefault(component["name"], []).append(component)
        hosts[name] = _Host(
            _host_component(name, facts, os_text.get(name)), list(packages.values()), by_name
        )
    return hosts


def _affected(host: _Host, finding: Mapping[str, Any]) -> list[str]:
    """The bom-refs of the components of ``host`` a finding affects: its binary packages,
    else (not in the snapshot) a component for its source package, added to the host."""
    found = [
        c["bom-ref"] for n in finding.get("packages", []) for c in host.by_name.get(inert(n), [])
    ]
    if found:
        return found
    purl = finding.get("purl")
    name = str(finding["source_package"])
    version = str(finding["installed_version"])
    ref = inert(f"{finding['host']}|{purl or f'{name}@{version}:source'}")
    if any(c["bom-ref"] == ref for c in host.by_name.get(inert(name), [])):
        return [ref]
    component: dict[str, Any] = {"type": "library", "bom-ref": ref, "name": inert(name)}
    component["version"] = inert(version)
    if purl:
        component["purl"] = purl
    component["properties"] = _property_list(host=finding["host"], source_package="true")
    host.packages.append(component)
    host.by_name.setdefault(component["name"], []).append(component)
    return [ref]


# --------------------------------------------------------------------------- vulnerabilities


def _held(
    document: Mapping[str, Any], snapshots: Mapping[str, HostSnapshot]
) -> dict[str, set[str]]:
    held = {h["name"]: set(h.get("held_packages") or ()) for h in document.get("hosts", [])}
    for name, snapshot in snapshots.items():
        if snapshot.facts.held_packages is not None:
            held.setdefault(name, set()).update(snapshot.facts.held_packages)
    return held


def _source(vid: str, finding: Mapping[str, Any]) -> VulnerabilitySource:
    if CVE_RE.match(vid):
        return VulnerabilitySource(name="NVD", url=XsUri(cve_url(vid)))
    url = advisory_url(finding)
    if url is None:
        return _PATCHPILOT
    base = _DEBIAN if url.startswith(DEBIAN_TRACKER) else _OSV
    return VulnerabilitySource(name=base.name, url=XsUri(url))


def _distribution(finding: Mapping[str, Any]) -> VulnerabilitySource:
    """Who rated the finding's severity: the host's distribution (the purl's vendor)."""
    url = advisory_url(finding)
    if url and url.startswith(DEBIAN_TRACKER):
        return _DEBIAN
    purl = finding.get("purl")
    if purl:
        try:
            vendor = PackageURL.from_string(str(purl)).namespace
        except ValueError:
            vendor = None
        if vendor:
            return VulnerabilitySource(name=vendor)
    return _PATCHPILOT


def _ratings(
    vid: str, severity: str, finding: Mapping[str, Any], enrichment: Mapping[str, Enrichment]
) -> list[VulnerabilityRating]:
    ratings = [
        VulnerabilityRating(
            source=_distribution(finding),
            severity=_SEVERITY.get(severity, VulnerabilitySeverity.UNKNOWN),
            method=VulnerabilityScoreSource.OTHER,
            justification="the distribution's severity (urgency) as patchpilot normalised it",
        )
    ]
    known = enrichment.get(vid)
    for cvss in () if known is None else known.cvss:
        ratings.append(
            VulnerabilityRating(
                source=VulnerabilitySource(name=cvss.source) if cvss.source else _NVD,
                score=Decimal(str(cvss.base_score)),
                severity=vs_from_cvss_scores(cvss.base_score),
                method=_CVSS_METHOD.get(cvss.version, VulnerabilityScoreSource.OTHER),
                vector=cvss.vector,
            )
        )
    return ratings


@dataclass
class _Group:
    """Findings of one vulnerability id with the same analysis (one ``vulnerabilities`` entry)."""

    vid: str
    severity: str
    analysis: VexAnalysis
    findings: list[Mapping[str, Any]]
    targets: dict[str, None]


def _groups(
    document: Mapping[str, Any], hosts: dict[str, _Host], held: Mapping[str, set[str]]
) -> list[_Group]:
    groups: dict[tuple[Any, ...], _Group] = {}
    for finding in document.get("findings", []):
        host = str(finding["host"])
        is_held = bool(held.get(host, set()) & set(finding.get("packages", [])))
        analysis = vex_analysis(finding, held=is_held)
        targets = _affected(hosts[host], finding)
        for vid in vulnerability_ids(finding):
            severity = str(finding["severity"])
            key = (vid, severity, analysis)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(vid, severity, analysis, [], {})
            group.findings.append(finding)
            group.targets.update(dict.fromkeys(targets))
    return list(groups.values())


def _vulnerability(group: _Group, enrichment: Mapping[str, Enrichment]) -> Vulnerability:
    first = group.findings[0]
    analysis = group.analysis
    advisories = sorted({str(f["advisory"]) for f in group.findings} - {group.vid})
    references = [
        VulnerabilityReference(id=inert(advisory), source=_source(advisory, f))
        for advisory in advisories
        for f in [next(f for f in group.findings if f["advisory"] == advisory)]
    ]
    pages = {url for f in group.findings if (url := advisory_url(f))}
    risks = [f["risk"] for f in group.findings if f.get("risk")]
    epss = best_epss(enrichment, [group.vid])
    fixed = sorted({str(f["fixed_version"]) for f in group.findings if f.get("fixed_version")})
    sources = sorted({str(f["source_package"]) for f in group.findings})
    recommendation = (
        f"Upgrade {', '.join(sources)} to {' / '.join(fixed)} (patchpilot run)" if fixed else None
    )
    digest = hashlib.sha256(repr((group.vid, group.severity, analysis)).encode()).hexdigest()
    return Vulnerability(
        bom_ref=inert(f"{group.vid}#{digest[:12]}"),
        id=inert(group.vid),
        source=_source(group.vid, first),
        references=references,
        ratings=_ratings(group.vid, group.severity, first, enrichment),
        recommendation=inert(recommendation) if recommendation else None,
        advisories=[VulnerabilityAdvisory(url=XsUri(url)) for url in sorted(pages)],
        analysis=VulnerabilityAnalysis(
            state=analysis.state,
            justification=analysis.justification,
            responses=analysis.responses,
            detail=analysis.detail,
        ),
        affects=[BomTarget(ref=ref) for ref in group.targets],
        properties=_properties(
            kev=str(any(f.get("kev") for f in group.findings)).lower(),
            epss=None if epss is None else epss.probability,
            epss_percentile=None if epss is None else epss.percentile,
            risk_score=max((r["score"] for r in risks), default=None),
            ssvc=next((r["ssvc"] for r in risks), None),
            due=min((r["due"] for r in risks if r.get("due")), default=None),
            advisories=" ".join(sorted({str(f["advisory"]) for f in group.findings})),
        ),
    )


# --------------------------------------------------------------------------- the BOM


def _timestamp(document: Mapping[str, Any]) -> datetime:
    generated = document.get("generated_at")
    if isinstance(generated, datetime):
        return generated
    if isinstance(generated, str):
        try:
            return datetime.fromisoformat(generated)
        except ValueError:
            pass
    return utcnow()


def cyclonedx_document(
    document: Mapping[str, Any],
    snapshots: Mapping[str, HostSnapshot] | None = None,
    enrichment: Mapping[str, Enrichment] | None = None,
) -> dict[str, Any]:
    """A ``patchpilot.report/v1`` document as a CycloneDX 1.6 BOM with VEX (JSON-ready).

    Args:
        document: the report (as :func:`patchpilot.app.report.report_document` builds it).
        snapshots: host -> the discovery snapshot the report describes (its components).
        enrichment: CVE -> CVSS/EPSS/KEV data (``Store.enrichment``) for ratings.
    """
    known = enrichment or {}
    snaps = snapshots or {}
    hosts = _hosts(document, snaps)
    groups = _groups(document, hosts, _held(document, snaps))
    patchpilot = Component(
        type=ComponentType.APPLICATION,
        name="patchpilot",
        version=__version__,
        bom_ref="tool:patchpilot",
    )
    run = document.get("run") or {}
    skeleton = Bom(
        metadata=BomMetaData(
            timestamp=_timestamp(document),
            tools=ToolRepository(components=[patchpilot, this_component()]),
            properties=_properties(
                report_schema=document.get("schema"),
                run_id=run.get("run_id"),
                mode=document.get("data", {}).get("mode"),
                information_uri=INFORMATION_URI,
            ),
        ),
        vulnerabilities=[_vulnerability(g, known) for g in groups],
    )
    made: dict[str, Any] = json.loads(JsonV1Dot6(skeleton).output_as_string())
    components: list[dict[str, Any]] = []
    dependencies: list[dict[str, Any]] = []
    for host in hosts.values():
        components.append(host.component)
        components.extend(host.packages)
        refs = [c["bom-ref"] for c in host.packages]
        dependencies.append({"ref": host.component["bom-ref"], "dependsOn": refs})
        dependencies.extend({"ref": ref} for ref in refs)
    order = ("$schema", "bomFormat", "specVersion", "serialNumber", "version", "metadata")
    result = {key: made[key] for key in order if key in made}
    if components:
        result["components"] = components
        result["dependencies"] = dependencies
    result.update({k: v for k, v in made.items() if k not in result})
    return result


def render_cyclonedx(
    document: Mapping[str, Any],
    snapshots: Mapping[str, HostSnapshot] | None = None,
    enrichment: Mapping[str, Enrichment] | None = None,
) -> str:
    """:func:`cyclonedx_document` as JSON text (what ``--format cyclonedx`` writes)."""
    return json.dumps(cyclonedx_document(document, snapshots, enrichment), indent=2) + "\n"
