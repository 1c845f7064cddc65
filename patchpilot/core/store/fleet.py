"""Fleet-wide summaries for the dashboard: one SQL pass each, whatever the fleet's size.

:class:`FleetRepository` is part of :class:`patchpilot.core.store.Store`. Its reads summarise
what the other repositories store, without parsing every document, so a page about 10,000
hosts reads a few aggregate rows per host:

* :meth:`FleetRepository.discovery_overview`: each host's latest discovery attempt (ok or
  not) and its latest successful one (OS, reboot flag, pending and security update counts);
* :meth:`FleetRepository.findings_overview`: each host's open findings (those of its latest
  assessed run, as :meth:`~patchpilot.core.store.findings.FindingsRepository.findings`
  selects them) by severity, how many are in KEV, and the earliest SLA due date;
* :meth:`FleetRepository.assessment_history`: per recent run and host, how many findings and
  whether any was past its due date on the run's day (the fleet chart);
* :meth:`FleetRepository.advisory_summaries`: the feed text of some advisories (untrusted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Final

from patchpilot.core.models import Severity
from patchpilot.core.store.base import StoreBase
from patchpilot.core.store.findings import _LATEST_SCOPE
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = ["DiscoveryOverview", "FindingsOverview", "FleetRepository", "HostAssessment"]

_BY_RANK: Final = {s.rank: s for s in Severity}

_DISCOVERY: Final = """
    WITH ranked AS (
        SELECT h.host, h.run_id, h.ok, h.error_type, h.message, h.recorded_at, h.facts,
               row_number() OVER (
                   PARTITION BY h.host ORDER BY r.started_at DESC, r.seq DESC
               ) AS rn_all,
               row_number() OVER (
                   PARTITION BY h.host, h.ok ORDER BY r.started_at DESC, r.seq DESC
               ) AS rn_kind
        FROM run_hosts AS h JOIN runs AS r ON r.run_id = h.run_id
    )
    SELECT host, run_id, ok, error_type, message, recorded_at, rn_all,
           json_extract(facts, '$.os.pretty_name'), json_extract(facts, '$.os.id'),
           json_extract(facts, '$.os.version_id'), json_extract(facts, '$.os.version_codename'),
           json_extract(facts, '$.reboot_required'),
           CASE WHEN ok = 1 THEN (SELECT count(*) FROM host_pending AS p
                                  WHERE p.run_id = ranked.run_id AND p.host = ranked.host)
           END,
           CASE WHEN ok = 1 THEN (SELECT count(*) FROM host_pending AS p
                                  WHERE p.run_id = ranked.run_id AND p.host = ranked.host
                                  AND json_extract(p.doc, '$.security') = 1)
           END
    FROM ranked WHERE rn_all = 1 OR (ok = 1 AND rn_kind = 1)
"""

# Only constant SQL is concatenated below (the findings repository's scope); values are bound.
_FINDINGS: Final = (
    "WITH scope AS ("  # noqa: S608
    + _LATEST_SCOPE
    + """)
    SELECT f.host, f.severity_rank, count(*),
           sum(EXISTS (SELECT 1 FROM json_each(f.cves) AS j JOIN kev AS v ON v.cve = j.value)),
           min(k.due_date),
           sum(f.fix_status = 'fixed' AND coalesce(f.fix_reachable, 0) = 1)
    FROM scope AS s
    JOIN findings AS f ON f.run_id = s.run_id AND f.host = s.host
    LEFT JOIN risk AS k ON k.run_id = f.run_id AND k.finding_key = f.finding_key
    GROUP BY f.host, f.severity_rank
"""
)

_ASSESSED_HOSTS: Final = (
    "WITH scope AS (" + _LATEST_SCOPE + ") SELECT host, run_id FROM scope"  # noqa: S608
)

_HISTORY: Final = """
    WITH recent AS (
        SELECT run_id, started_at, substr(started_at, 1, 10) AS day FROM runs
        WHERE kind IN ('scan', 'run') AND started_at >= :since
        ORDER BY started_at DESC, seq DESC LIMIT :runs
    ),
    counts AS (
        SELECT f.run_id, f.host, count(*) AS n, max(coalesce(k.due_date < r.day, 0)) AS late
        FROM recent AS r JOIN findings AS f ON f.run_id = r.run_id
        LEFT JOIN risk AS k ON k.run_id = f.run_id AND k.finding_key = f.finding_key
        GROUP BY f.run_id, f.host
    )
    SELECT r.run_id, r.started_at, fs.host, coalesce(c.n, 0), coalesce(c.late, 0)
    FROM recent AS r JOIN finding_sets AS fs ON fs.run_id = r.run_id
    LEFT JOIN counts AS c ON c.run_id = fs.run_id AND c.host = fs.host
    WHERE NOT EXISTS (SELECT 1 FROM run_hosts AS h
                      WHERE h.run_id = fs.run_id AND h.host = fs.host AND h.ok = 0)
    ORDER BY r.started_at, fs.host
"""


@dataclass(frozen=True)
class DiscoveryOverview:
    """A host's latest discovery attempt and what its latest successful one found."""

    host: str
    last_run_id: str
    last_ok: bool
    last_at: datetime
    error_type: str | None = None
    error: str | None = None
    snapshot_run_id: str | None = None
    snapshot_at: datetime | None = None
    os_name: str | None = None
    os_id: str | None = None
    os_version: str | None = None
    os_codename: str | None = None
    reboot_required: bool | None = None
    pending: int | None = None
    security: int | None = None


@dataclass
class FindingsOverview:
    """A host's open findings: counts by severity, KEV, actionable, earliest due date."""

    host: str
    run_id: str
    by_severity: dict[Severity, int] = field(default_factory=dict)
    kev: int = 0
    actionable: int = 0
    earliest_due: date | None = None

    @property
    def total(self) -> int:
        """How many open findings."""
        return sum(self.by_severity.values())


@dataclass(frozen=True)
class HostAssessment:
    """One host assessed by one run: its findings then, and whether any was overdue."""

    run_id: str
    started_at: datetime
    host: str
    findings: int
    overdue: bool


def _text(value: object) -> str | None:
    return None if value is None else str(value)


class FleetRepository(StoreBase):
    """Aggregate reads over discovery, findings and risk for fleet pages; part of ``Store``."""

    def discovery_overview(self) -> dict[str, DiscoveryOverview]:
        """host -> its latest discovery attempt and latest successful snapshot (hosts never
        discovered are absent)."""
        latest: dict[str, tuple[object, ...]] = {}
        snapshots: dict[str, tuple[object, ...]] = {}
        for row in self._conn().execute(_DISCOVERY).fetchall():
            if row[6] == 1:
                latest[row[0]] = row
            if row[2]:
                snapshots[row[0]] = row
        overview: dict[str, DiscoveryOverview] = {}
        for host, (_, run_id, ok, error_type, message, recorded_at, *_rest) in latest.items():
            snap = snapshots.get(host)
            entry = DiscoveryOverview(
                host=host,
                last_run_id=str(run_id),
                last_ok=bool(ok),
                last_at=from_db_time(str(recorded_at)),
                error_type=None if ok else _text(error_type),
                error=None if ok else _text(message),
            )
            if snap is not None:
                os_name, os_id, os_version, codename, reboot, pending, security = snap[7:]
                entry = replace(
                    entry,
                    snapshot_run_id=str(snap[1]),
                    snapshot_at=from_db_time(str(snap[5])),
                    os_name=_text(os_name) or None,
                    os_id=_text(os_id),
                    os_version=_text(os_version),
                    os_codename=_text(codename),
                    reboot_required=None if reboot is None else bool(reboot),
                    pending=None if pending is None else int(str(pending)),
                    security=None if security is None else int(str(security)),
                )
            overview[host] = entry
        return overview

    def findings_overview(self) -> dict[str, FindingsOverview]:
        """host -> its open findings summarised (every assessed host, zero findings too)."""
        conn = self._conn()
        params = {"host": None, "run_id": None}
        found = {
            host: FindingsOverview(host=host, run_id=run_id)
            for host, run_id in conn.execute(_ASSESSED_HOSTS, params)
        }
        for host, rank, count, kev, due, actionable in conn.execute(_FINDINGS, params):
            entry = found.get(host)
            if entry is None:  # pragma: no cover - both read the same scope
                continue
            severity = _BY_RANK.get(int(rank), Severity.UNKNOWN)
            entry.by_severity[severity] = entry.by_severity.get(severity, 0) + int(count)
            entry.kev += int(kev or 0)
            entry.actionable += int(actionable or 0)
            if due is not None:
                day = date.fromisoformat(due)
                if entry.earliest_due is None or day < entry.earliest_due:
                    entry.earliest_due = day
        return found

    def assessments_version(self) -> tuple[object, ...]:
        """A value that changes whenever :meth:`assessment_history` may answer differently
        (runs started, ended or changed status; finding sets or risk written), for caches."""
        row = (
            self._conn()
            .execute(
                "SELECT (SELECT count(*) FROM runs), (SELECT max(seq) FROM runs),"
                " (SELECT max(finished_at) FROM runs),"
                " (SELECT group_concat(status) FROM (SELECT status FROM runs"
                "  ORDER BY seq DESC LIMIT 50)),"
                " (SELECT count(*) FROM finding_sets), (SELECT max(recorded_at) FROM finding_sets),"
                " (SELECT count(*) FROM risk)"
            )
            .fetchone()
        )
        return (str(self.path), *row)

    def assessment_history(self, since: datetime, *, runs: int = 200) -> list[HostAssessment]:
        """Each host assessed by the latest ``runs`` scan or patch runs started since
        ``since``, oldest run first (hosts whose discovery failed in a run are left out)."""
        rows = self._conn().execute(_HISTORY, {"since": to_db_time(since), "runs": runs})
        starts: dict[str, datetime] = {}  # parsed once per run
        found = []
        for run_id, started, host, count, overdue in rows:
            when = starts.get(started)
            if when is None:
                when = starts[started] = from_db_time(started)
            found.append(HostAssessment(run_id, when, host, int(count), bool(overdue)))
        return found

    def advisory_summaries(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """(source package, advisory id) -> the advisory's summary (feed text, untrusted),
        for the keys some advisory of any release has a summary for."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        rows = self._conn().execute(
            "SELECT a.source_package, a.advisory_id, json_extract(a.doc, '$.summary')"
            " FROM json_each(?) AS w JOIN advisories AS a"
            " ON a.source_package = json_extract(w.value, '$[0]')"
            " AND a.advisory_id = json_extract(w.value, '$[1]')"
            " WHERE json_extract(a.doc, '$.summary') IS NOT NULL",
            (json.dumps(wanted),),
        )
        found: dict[tuple[str, str], str] = {}
        for package, advisory, summary in rows:
            found.setdefault((package, advisory), str(summary))
        return found
