"""CI gates over a scan: severity and score thresholds that fail closed, and feed freshness.

``patchpilot scan --fail-on SEVERITY`` exits 5 when :func:`gate` fails, ``--require-feeds``
exits 9 when :func:`feeds_problem` names a problem. Both are use cases every interface shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import structlog

from patchpilot.core.acceptance import Acceptances
from patchpilot.core.feeds import FeedKind
from patchpilot.core.models import PendingUpdate, Severity
from patchpilot.core.store import HostResult, Store

__all__ = ["ADVISORY_FEEDS", "GateResult", "UnknownSeverity", "feeds_problem", "gate"]

log = structlog.get_logger(__name__)


class UnknownSeverity(StrEnum):
    """How ``--fail-on`` treats a finding or security update whose severity is not known."""

    FAIL = "fail"
    """Counts as matching any threshold (the default: a gate fails closed)."""
    IGNORE = "ignore"
    """Never matches a threshold other than ``unknown`` (opt-out)."""


ADVISORY_FEEDS: Final = frozenset(
    {FeedKind.DEBIAN_DSA, FeedKind.DEBIAN_DLA, FeedKind.DEBIAN_JSON, FeedKind.OSV}
)
"""Feeds that say which package versions are vulnerable (``--require-feeds`` needs one)."""


@dataclass(frozen=True)
class GateResult:
    """The verdict of a CI gate over one scan, with what made it fail."""

    failed: bool
    findings: int = 0
    """Findings at or above the thresholds."""
    unknown_severity: int = 0
    """Of those, how many matched only because their severity is unknown."""
    security_updates: int = 0
    """Pending security updates no finding covers, counted as unknown severity."""
    accepted: int = 0
    """Findings and updates that would have matched but a live risk acceptance covers."""

    @property
    def reason(self) -> str:
        """One line for the terminal: what failed the gate."""
        if not self.failed:
            return "gate passed"
        parts = [f"{self.findings} finding(s) at or above the threshold"]
        if self.unknown_severity:
            parts.append(f"{self.unknown_severity} of them of unknown severity")
        if self.security_updates:
            parts.append(f"{self.security_updates} pending security update(s) of unknown severity")
        if self.accepted:
            parts.append(f"{self.accepted} accepted risk(s) not counted")
        text = "gate failed: " + "; ".join(parts)
        if self.unknown_severity or self.security_updates:
            text += " (`--unknown-severity ignore` counts only known severities)"
        return text


def gate(
    store: Store,
    run_id: str,
    *,
    fail_on: Severity | None,
    fail_on_score: float | None,
    unknown_severity: UnknownSeverity = UnknownSeverity.FAIL,
    acceptances: Acceptances | None = None,
) -> GateResult:
    """Whether the findings of ``run_id`` fail a CI gate; fails closed.

    A finding matches ``fail_on`` when its severity is at least that, or (by default) when its
    severity is unknown: without feeds every severity is unknown, and a gate that passed then
    would pass exactly when patchpilot knows least. For the same reason a pending security
    update that no finding covers (no CVE in its changelog, no advisory imported) counts as a
    finding of unknown severity. ``UnknownSeverity.IGNORE`` restores "unknown never counts as a
    higher severity". ``fail_on_score`` matches a risk score at or above it.

    A finding a live risk acceptance covers (``acceptances``, see
    :mod:`patchpilot.app.acceptances`) never counts, nor does an uncovered security update
    whose ``<ecosystem>-security-update:<source>`` id, or every CVE, is accepted on its host;
    they are counted in ``GateResult.accepted``. An expired acceptance covers nothing.
    """
    if fail_on is None and fail_on_score is None:
        return GateResult(failed=False)
    count_unknown = unknown_severity is UnknownSeverity.FAIL or fail_on is Severity.UNKNOWN
    matched = unknown = accepted = 0
    covered: set[tuple[str, str]] = set()
    for r in store.findings(run_id=run_id):
        f = r.finding
        covered.update((f.host, b) for b in f.binary_packages)
        covered.add((f.host, f"src:{f.source_package}"))
        hit = unknown_hit = False
        if fail_on is not None:
            if f.severity is Severity.UNKNOWN:
                hit = unknown_hit = count_unknown
            else:
                hit = f.severity.rank >= fail_on.rank
        if not hit and fail_on_score is not None and r.risk is not None:
            hit = r.risk.score >= fail_on_score
        if hit and acceptances and acceptances.for_finding(f) is not None:
            accepted += 1
            continue
        matched += hit
        unknown += unknown_hit
    updates = 0
    if fail_on is not None and count_unknown:
        for h in store.host_results(run_id, details=True):
            uncovered = [
                u
                for u in h.pending
                if u.security
                and (h.host, u.name) not in covered
                and (h.host, f"src:{u.source_name}") not in covered
            ]
            kept = [u for u in uncovered if not _update_accepted(acceptances, h, u)]
            accepted += len(uncovered) - len(kept)
            updates += len(kept)
    result = GateResult(
        failed=bool(matched or updates),
        findings=matched,
        unknown_severity=unknown,
        security_updates=updates,
        accepted=accepted,
    )
    log.info(
        "scan.gate",
        run_id=run_id,
        failed=result.failed,
        findings=matched,
        unknown_severity=unknown,
        security_updates=updates,
        accepted=accepted,
    )
    return result


def _update_accepted(
    acceptances: Acceptances | None, host: HostResult, update: PendingUpdate
) -> bool:
    """Whether a live acceptance covers a pending update no finding covers."""
    if not acceptances:
        return False
    from patchpilot.agents.assessment import pending_advisory_id

    ecosystem = None if host.facts is None else host.facts.os.family.ecosystem
    source = update.source_name or update.name
    ids = [pending_advisory_id(ecosystem, source)] if ecosystem is not None else []
    return acceptances.for_ids(host.host, ids, update.cves) is not None


def feeds_problem(store: Store) -> str | None:
    """Why the store's feeds cannot back a verdict (``--require-feeds``), or None if they can.

    They cannot when no advisory feed (Debian DSA/DLA lists or JSON, OSV) was ever imported,
    or when any imported feed is stale (older than its kind's maximum age).
    """
    status = store.feed_status()
    kinds = {s.kind for s in status}
    problems: list[str] = []
    if not kinds & ADVISORY_FEEDS:
        names = ", ".join(sorted(k.value for k in ADVISORY_FEEDS))
        problems.append(f"no advisory feed imported (one of {names})")
    stale = sorted({s.kind.value for s in status if s.stale})
    if stale:
        problems.append(f"stale feeds: {', '.join(stale)}")
    if not problems:
        return None
    return "; ".join(problems) + "; run `patchpilot feeds update` or `patchpilot feeds import`"
