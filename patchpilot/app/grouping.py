"""Findings grouped per host and fix: one upgrade, all its advisories and CVEs.

A host with five openjdk-17 advisories fixed by the same upgrade has five findings (one per
advisory, as the store keeps them) but one thing to do. A *fix group* is the findings of one
host and one installed source package that share a fix kind: every finding with a fixed
version (``fixed`` or ``held``) is one group, whose ``fixed_version`` is the highest of them
(the one upgrade that fixes all); findings without a fix (``no-fix-yet``, ``will-not-fix``…)
group by state. The same CVE reported by several feeds (a DSA and an OSV record) lands in the
same group, with every source in its provenance. Groups are listed highest risk first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from patchpilot.core.errors import PatchpilotError
from patchpilot.core.models import Ecosystem, FixStatus
from patchpilot.core.store import FindingRecord
from patchpilot.core.versions import compare

__all__ = ["fix_group_key", "fix_groups"]

_STATE_ORDER = (FixStatus.FIXED, FixStatus.HELD)
"""With a version: ``fixed`` is stated over ``held`` (a hold holds every advisory alike)."""


def fix_group_key(record: FindingRecord) -> tuple[str, str, str, str]:
    """``(host, source package, installed version, fix kind)``: what one fix group shares."""
    f = record.finding
    kind = "fix" if f.fix.version else f.fix.status.value
    return (f.host, f.source_package, f.installed_source_version, kind)


def _highest(versions: Sequence[str], ecosystem: Ecosystem) -> str:
    best = versions[0]
    for version in versions[1:]:
        try:
            if compare(ecosystem, version, best) > 0:
                best = version
        except PatchpilotError:
            continue  # an unparseable version was reported when assessed; keep the best known
    return best


def fix_groups(
    records: Sequence[FindingRecord],
    ecosystems: Mapping[str, Ecosystem] | None = None,
    accepted_until: Sequence[date | None] | None = None,
) -> list[dict[str, Any]]:
    """The report's ``fixes``: one JSON-ready group per host and fix.

    Args:
        records: findings with their risk (any order).
        ecosystems: host -> package ecosystem, to order fixed versions (default: Debian).
        accepted_until: per record (same order), the last day of its live risk acceptance
            (None: not accepted). A group's ``accepted`` says how many of its findings are
            accepted and until when (the earliest day); None when none is.

    Returns:
        Groups sorted by descending risk score, then host and source package.
    """
    grouped: dict[tuple[str, str, str, str], list[FindingRecord]] = {}
    untils: dict[tuple[str, str, str, str], list[date | None]] = {}
    for i, record in enumerate(records):
        key = fix_group_key(record)
        grouped.setdefault(key, []).append(record)
        untils.setdefault(key, []).append(accepted_until[i] if accepted_until else None)
    groups: list[dict[str, Any]] = []
    for key, members in grouped.items():
        host, source, installed, _kind = key
        findings = [m.finding for m in members]
        taken = [u for u in untils[key] if u is not None]
        fixed = [f.fix.version for f in findings if f.fix.version]
        ecosystem = (ecosystems or {}).get(host, Ecosystem.DEBIAN)
        states = {f.fix.status for f in findings}
        state = next((s for s in _STATE_ORDER if s in states), findings[0].fix.status)
        top = max(members, key=lambda m: m.risk.score if m.risk else -1.0)
        provenance: dict[tuple[str, str | None], dict[str, Any]] = {}
        for f in findings:
            for p in f.provenance:
                provenance.setdefault(
                    (p.feed, p.record_id),
                    {"feed": p.feed, "source": p.source, "record_id": p.record_id},
                )
        groups.append(
            {
                "host": host,
                "source_package": source,
                "packages": sorted({b for f in findings for b in f.binary_packages}),
                "installed_version": installed,
                "fixed_version": _highest(fixed, ecosystem) if fixed else None,
                "fix_state": state.value,
                "actionable": any(f.actionable for f in findings),
                "advisories": sorted({f.advisory_id for f in findings}),
                "cves": sorted({c for f in findings for c in f.cves}),
                "severity": max((f.severity for f in findings), key=lambda s: s.rank).value,
                "kev": any(m.kev for m in members),
                "score": round(top.risk.score, 1) if top.risk else None,
                "ssvc": top.risk.ssvc.value if top.risk else None,
                "due": top.risk.due_date.isoformat() if top.risk and top.risk.due_date else None,
                "rationale": top.risk.rationale if top.risk else None,
                "provenance": sorted(
                    provenance.values(), key=lambda p: (p["feed"], p["record_id"] or "")
                ),
                "accepted": {
                    "findings": len(taken),
                    "of": len(members),
                    "until": min(taken).isoformat(),
                }
                if taken
                else None,
            }
        )
    groups.sort(key=lambda g: (-(g["score"] or -1.0), g["host"], g["source_package"]))
    return groups
