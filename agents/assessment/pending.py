"""The no-feeds fallback: findings from the updates the host's repositories announce.

With no advisories in the store, a pending update from a security origin (or one whose
changelog names CVEs) is a finding of its own, under a synthetic, stable advisory id
(:func:`pending_advisory_id`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog

from patchpilot.agents.assessment.verdicts import FirstSeen
from patchpilot.core import versions
from patchpilot.core.errors import PatchpilotError
from patchpilot.core.models import (
    Ecosystem,
    Finding,
    FixState,
    InstalledPackage,
    PendingUpdate,
    Provenance,
    Severity,
    utcnow,
)
from patchpilot.tools.facts.apt import is_security_origin

log = structlog.get_logger("patchpilot.agents.assessment")

__all__ = ["findings_from_pending", "pending_advisory_id"]


def pending_advisory_id(ecosystem: Ecosystem | str, source: str, *, security: bool = True) -> str:
    """The synthetic advisory id of a repository-announced security update.

    ``"<ecosystem>-security-update:<source>"``, e.g. ``"debian-security-update:openssl"``;
    ``"<ecosystem>-update:<source>"`` for an update from another origin (a vendor or local
    repository) whose changelog names the CVEs it fixes
    (the ecosystem, not the distribution: Ubuntu hosts also get ``debian-``). It names "the
    security suite offers a newer build of this source", not a CVE: one id per source package,
    stable across runs so ``first_seen`` carries over, and it never collides with DSA/DLA/USN/
    CVE ids.

    Args:
        ecosystem: the package ecosystem.
        source: the source package name.

    Returns:
        The id.
    """
    value = ecosystem.value if isinstance(ecosystem, Ecosystem) else str(ecosystem)
    return f"{value}-security-update:{source}" if security else f"{value}-update:{source}"


def _best_candidate(
    ecosystem: Ecosystem, entries: Sequence[tuple[InstalledPackage | None, PendingUpdate]]
) -> str:
    tracking = [u for p, u in entries if p is not None and p.version == p.source_version]
    pool = tracking or [u for _, u in entries]
    best = pool[0].candidate_version
    for update in pool[1:]:
        try:
            if versions.compare(ecosystem, update.candidate_version, best) > 0:
                best = update.candidate_version
        except PatchpilotError:
            continue
    return best


def findings_from_pending(
    host: str,
    packages: Sequence[InstalledPackage],
    pending: Sequence[PendingUpdate],
    first_seen: FirstSeen | None = None,
    now: datetime | None = None,
) -> list[Finding]:
    """Findings from the host's own security suite when no advisory feed is available.

    One finding per installed source package with at least one pending upgrade from a
    ``-security`` suite (:attr:`PendingUpdate.security`) or whose changelog names CVEs it
    fixes (:attr:`PendingUpdate.cves`, any origin); new installs (no installed version)
    are skipped since nothing installed is fixed by them. Each finding has:

    * ``advisory_id`` :func:`pending_advisory_id` (``"debian-security-update:openssl"``);
    * ``fix`` ``fixed(<candidate>)`` where the candidate is the best-known new version: the
      highest candidate among binaries whose version equals their source version (else among
      all), a *binary* version standing in for the unknown new source version;
    * ``fix_reachable=True`` (apt offers it: installable now), ``severity=unknown``, and the
      CVEs read from the candidates' changelogs (none when changelogs were not read);
    * provenance ``feed="apt"``, ``source`` = the security origin (e.g.
      ``Debian-Security:12/oldstable-security``, else the first origin),
      ``confidence="repository-metadata"``; plus ``feed="changelog"`` when CVEs came from a
      changelog.

    A pending binary missing from ``packages`` (inventory and simulation out of step) is kept
    under its own name as the source, with its installed version.

    Args:
        host: the inventory host name.
        packages: its installed packages.
        pending: its pending updates (``AptPendingUpdates``).
        first_seen: first-seen times by (source package, advisory id); default ``now``.
        now: the assessment time (default: the current UTC time).

    Returns:
        The findings, sorted by source package.
    """
    when = now or utcnow()
    seen = first_seen or {}
    by_key = {(p.name, p.arch): p for p in packages}
    by_name: dict[str, InstalledPackage] = {}
    for installed_package in packages:
        by_name.setdefault(installed_package.name, installed_package)
    grouped: dict[str, list[tuple[InstalledPackage | None, PendingUpdate]]] = {}
    for update in pending:
        if not (update.security or update.cves) or update.installed_version is None:
            continue
        match = by_key.get((update.name, update.arch)) or by_name.get(update.name)
        source = match.source_name if match is not None else update.name
        grouped.setdefault(source, []).append((match, update))
    findings: list[Finding] = []
    for source, entries in sorted(grouped.items()):
        installed_packages = [p for p, _ in entries if p is not None]
        ecosystem = installed_packages[0].ecosystem if installed_packages else Ecosystem.DEBIAN
        installed = (
            installed_packages[0].source_version
            if installed_packages
            else entries[0][1].installed_version or ""
        )
        origin = next(
            (o for _, u in entries for o in u.origins if is_security_origin(o)),
            next((o for _, u in entries for o in u.origins), "apt"),
        )
        advisory_id = pending_advisory_id(
            ecosystem, source, security=any(u.security for _, u in entries)
        )
        cves = tuple(dict.fromkeys(c for _, u in entries for c in u.cves))
        provenance = [
            Provenance(
                feed="apt",
                source=origin,
                record_id=advisory_id,
                fetched_at=when,
                confidence="repository-metadata",
            )
        ]
        if any(u.cves_from == "changelog" for _, u in entries):
            provenance.append(
                Provenance(
                    feed="changelog",
                    source=f"changelog.Debian.gz of {source} {_best_candidate(ecosystem, entries)}",
                    record_id=advisory_id,
                    fetched_at=when,
                    confidence="repository-metadata",
                )
            )
        findings.append(
            Finding(
                host=host,
                source_package=source,
                binary_packages=tuple(sorted({u.name for _, u in entries})),
                installed_source_version=installed,
                advisory_id=advisory_id,
                cves=cves,
                fix=FixState.fixed(_best_candidate(ecosystem, entries)),
                fix_reachable=True,
                severity=Severity.UNKNOWN,
                first_seen=seen.get((source, advisory_id), when),
                provenance=tuple(provenance),
            )
        )
    return findings
