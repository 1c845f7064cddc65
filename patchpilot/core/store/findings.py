"""Findings and their risk: per-run, per-host finding sets and the queries over them.

:class:`FindingsRepository` replaces a host's finding set in a run (keeping each finding's
earliest ``first_seen``), saves risk assessments and queries findings (one run, or each
host's latest assessed run) with their risk and KEV membership.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import structlog

from patchpilot.core.models import (
    CVE_RE,
    Finding,
    FixStatus,
    RiskAssessment,
    Severity,
    SSVCOutcome,
    utcnow,
)
from patchpilot.core.resources import gc_paused
from patchpilot.core.store.base import StoreBase, require_run
from patchpilot.core.store.records import (
    FindingRecord,
    StoreError,
    finding_key,
)
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = ["FindingsRepository"]

log = structlog.get_logger(__name__)

# A finding is "in KEV" when any of its CVEs (the advisory id included when it is a CVE) is.
_KEV_EXPR: Final = "EXISTS (SELECT 1 FROM json_each(f.cves) AS j JOIN kev AS v ON v.cve = j.value)"

# For each host, its latest run with a finding set where the host did not fail.
_LATEST_SCOPE: Final = """
    SELECT run_id, host FROM (
        SELECT fs.run_id, fs.host,
               row_number() OVER (
                   PARTITION BY fs.host ORDER BY r.started_at DESC, r.seq DESC
               ) AS rn
        FROM finding_sets AS fs JOIN runs AS r ON r.run_id = fs.run_id
        WHERE NOT EXISTS (
            SELECT 1 FROM run_hosts AS h
            WHERE h.run_id = fs.run_id AND h.host = fs.host AND h.ok = 0
        ) AND (:host IS NULL OR fs.host = :host)
    ) WHERE rn = 1
"""
_RUN_SCOPE: Final = """
    SELECT run_id, host FROM finding_sets
    WHERE run_id = :run_id AND (:host IS NULL OR host = :host)
"""
_FINDINGS_SELECT: Final = """
    SELECT f.doc, k.doc,
           EXISTS (SELECT 1 FROM json_each(f.cves) AS j JOIN kev AS v ON v.cve = j.value)
    FROM scope AS s
    JOIN findings AS f ON f.run_id = s.run_id AND f.host = s.host
    LEFT JOIN risk AS k ON k.run_id = f.run_id AND k.finding_key = f.finding_key
"""
_FINDINGS_ORDER: Final = (
    " ORDER BY k.score IS NULL, k.score DESC, f.host, f.source_package, f.advisory_id"
)

_SEVERITY_RANK: Final[Mapping[Severity, int]] = {s: s.rank for s in Severity}
_FIX_STATUS_TEXT: Final[Mapping[FixStatus, str]] = {s: s.value for s in FixStatus}
_SSVC_TEXT: Final[Mapping[SSVCOutcome, str]] = {s: s.value for s in SSVCOutcome}
_UPSERT_FIRST_SEEN: Final = (
    "INSERT INTO finding_first_seen (host, source_package, advisory_id, first_seen)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (host, source_package, advisory_id) DO UPDATE"
    " SET first_seen = min(finding_first_seen.first_seen, excluded.first_seen)"
)


class _WriteMemo:
    """Column text derived from finding fields during one write, memoised by value identity.

    Fleet findings share field values (one first-seen time per scan, an advisory's CVEs), so
    the text is built once per distinct object. Each entry holds its values, so no id is
    reused by another object while the memo lives (one write).
    """

    def __init__(self) -> None:
        self._times: dict[int, tuple[datetime, str]] = {}
        self._cves: dict[tuple[int, int], tuple[tuple[str, tuple[str, ...]], str]] = {}

    def db_time(self, moment: datetime) -> str:
        """:func:`to_db_time`."""
        hit = self._times.get(id(moment))
        if hit is not None:
            return hit[1]
        text = to_db_time(moment)
        self._times[id(moment)] = (moment, text)
        return text

    def cves(self, advisory_id: str, cves: tuple[str, ...]) -> str:
        """The ``cves`` column: the advisory id when it is a CVE, then the CVEs, once each."""
        key = (id(advisory_id), id(cves))
        hit = self._cves.get(key)
        if hit is not None:
            return hit[1]
        ids = list(cves)
        if CVE_RE.match(advisory_id):
            ids.insert(0, advisory_id)
        text = json.dumps(list(dict.fromkeys(ids)))
        self._cves[key] = ((advisory_id, cves), text)
        return text


class FindingsRepository(StoreBase):
    """Finding sets, first-seen times, risk and the findings query; part of ``Store``."""

    def replace_findings(self, run_id: str, host: str, findings: Sequence[Finding]) -> None:
        """Save the complete findings of one host in one run (replacing earlier ones).

        An empty sequence is a result too: the host was assessed and has no findings, so it
        hides older findings from :meth:`findings`. Each finding's ``first_seen`` becomes the
        earliest ever recorded for (host, source package, advisory id).

        Args:
            run_id: The run (must exist).
            host: The host; every finding must be of it.
            findings: All its findings, at most one per (source package, advisory id).

        Raises:
            StoreError: If the run is unknown, a finding is of another host, or two findings
                share a key.
        """
        self.replace_findings_bulk(run_id, {host: findings})

    def replace_findings_bulk(
        self, run_id: str, findings_by_host: Mapping[str, Sequence[Finding]]
    ) -> None:
        """:meth:`replace_findings` for many hosts in one transaction (fleet-scale writes).

        Raises:
            StoreError: as :meth:`replace_findings`; nothing is written then.
        """
        for host, findings in findings_by_host.items():
            self._check_findings(run_id, host, findings)
        with self._transaction(
            f"replace findings of {len(findings_by_host)} host(s) in run {run_id}"
        ) as conn:
            require_run(conn, run_id)
            self._write_findings(conn, run_id, findings_by_host)

    @staticmethod
    def _check_findings(run_id: str, host: str, findings: Sequence[Finding]) -> None:
        seen: set[tuple[str, str]] = set()
        for finding in findings:
            if finding.host != host:
                raise StoreError(f"finding {finding_key(finding)} is not of host {host!r}")
            key = (finding.source_package, finding.advisory_id)
            if key in seen:
                raise StoreError(f"duplicate finding {finding_key(finding)} in run {run_id}")
            seen.add(key)

    @staticmethod
    def _write_findings(
        conn: sqlite3.Connection, run_id: str, findings_by_host: Mapping[str, Sequence[Finding]]
    ) -> None:
        """Replace the finding sets of the hosts (checked: own findings, distinct keys).

        Each stored ``first_seen`` is the earliest ever recorded for (host, source package,
        advisory id): the recorded ones are read in one query, and only new or earlier
        times are written.
        """
        memo = _WriteMemo()
        conn.executemany(
            "DELETE FROM finding_sets WHERE run_id = ? AND host = ?",
            [(run_id, host) for host in findings_by_host],
        )
        conn.executemany(
            "INSERT INTO finding_sets (run_id, host, recorded_at) VALUES (?, ?, ?)",
            [(run_id, host, to_db_time(utcnow())) for host in findings_by_host],
        )
        assessed = [host for host, findings in findings_by_host.items() if findings]
        recorded: dict[tuple[str, str, str], str] = {
            (host, package, advisory): seen
            for host, package, advisory, seen in conn.execute(
                "SELECT host, source_package, advisory_id, first_seen FROM finding_first_seen"
                " WHERE host IN (SELECT value FROM json_each(?))",
                (json.dumps(assessed),),
            )
        }
        first_seen_rows: list[tuple[str, str, str, str]] = []
        rows: list[tuple[Any, ...]] = []
        for host, findings in findings_by_host.items():
            for finding in findings:
                source, advisory_id = finding.source_package, finding.advisory_id
                first_seen = memo.db_time(finding.first_seen)
                earliest = recorded.get((host, source, advisory_id))
                if earliest is None or first_seen < earliest:
                    # As the upsert's min(): TEXT compares by bytes, UTF-8 keeps code point order.
                    first_seen_rows.append((host, source, advisory_id, first_seen))
                    earliest = first_seen
                stored = finding
                if earliest != first_seen:
                    stored = finding.model_copy(update={"first_seen": from_db_time(earliest)})
                reachable = finding.fix_reachable
                severity = finding.severity
                rank = _SEVERITY_RANK.get(severity)
                if rank is None:
                    rank = severity.rank
                status = finding.fix.status
                status_text = _FIX_STATUS_TEXT.get(status)
                if status_text is None:
                    status_text = status.value
                rows.append(
                    (
                        run_id,
                        host,
                        source,
                        advisory_id,
                        f"{host}|{source}|{advisory_id}",  # finding_key(): host is checked
                        rank,
                        int(severity is Severity.UNKNOWN),
                        status_text,
                        None if reachable is None else int(reachable),
                        memo.cves(advisory_id, finding.cves),
                        stored.model_dump_json(),
                    )
                )
        conn.executemany(_UPSERT_FIRST_SEEN, first_seen_rows)
        conn.executemany(
            "INSERT INTO findings (run_id, host, source_package, advisory_id, finding_key,"
            " severity_rank, unknown_severity, fix_status, fix_reachable, cves, doc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def first_seen_map(self, host: str) -> dict[tuple[str, str], datetime]:
        """(source package, advisory id) -> earliest ``first_seen`` ever recorded for ``host``."""
        rows = self._conn().execute(
            "SELECT source_package, advisory_id, first_seen FROM finding_first_seen WHERE host = ?",
            (host,),
        )
        return {(package, advisory): from_db_time(seen) for package, advisory, seen in rows}

    def save_risk(self, run_id: str, assessments: Sequence[RiskAssessment]) -> None:
        """Save risk assessments of a run's findings (keyed by ``finding_key``; replaces).

        Args:
            run_id: The run (must exist).
            assessments: The assessments.

        Raises:
            StoreError: If the run is unknown.
        """
        with self._transaction(f"save risk of run {run_id}") as conn:
            require_run(conn, run_id)
            conn.executemany(
                "INSERT INTO risk (run_id, finding_key, score, ssvc, due_date, doc)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, finding_key) DO UPDATE SET"
                " score = excluded.score, ssvc = excluded.ssvc, due_date = excluded.due_date,"
                " doc = excluded.doc",
                [
                    (
                        run_id,
                        a.finding_key,
                        a.score,
                        _SSVC_TEXT.get(a.ssvc) or a.ssvc.value,
                        a.due_date.isoformat() if a.due_date else None,
                        a.model_dump_json(),
                    )
                    for a in assessments
                ],
            )

    def findings(
        self,
        *,
        run_id: str | None = None,
        host: str | None = None,
        min_severity: Severity | None = None,
        min_score: float | None = None,
        kev: bool | None = None,
        fix_status: FixStatus | None = None,
        actionable: bool | None = None,
        include_unknown_severity: bool = True,
    ) -> list[FindingRecord]:
        """Query findings with their risk.

        Args:
            run_id: One run's findings; None: for each host, the findings of its latest run
                (by start time) that recorded findings for it and where it did not fail.
            host: Only this host.
            min_severity: Severity at least this. Findings of ``unknown`` severity are kept
                unless ``include_unknown_severity`` is False (unknown is never "low").
            min_score: Risk score at least this (findings without a saved risk are dropped).
            kev: Only findings with (True) / without (False) a CVE in the KEV catalog.
            fix_status: Only this fix state.
            actionable: Only findings that are (True) / are not (False) actionable: fixed
                and reachable.
            include_unknown_severity: See ``min_severity``.

        Returns:
            Records sorted by risk score (highest first, unscored last), host, source
            package and advisory id.
        """
        params: dict[str, Any] = {"run_id": run_id, "host": host}
        clauses: list[str] = []
        if min_severity is not None:
            params["min_rank"] = min_severity.rank
            clauses.append(
                "(f.severity_rank >= :min_rank OR f.unknown_severity = 1)"
                if include_unknown_severity
                else "f.severity_rank >= :min_rank"
            )
        if min_score is not None:
            params["min_score"] = min_score
            clauses.append("k.score >= :min_score")
        if kev is not None:
            params["kev"] = int(kev)
            clauses.append(_KEV_EXPR + " = :kev")
        if fix_status is not None:
            params["fix_status"] = fix_status.value
            clauses.append("f.fix_status = :fix_status")
        if actionable is not None:
            actionable_expr = "(f.fix_status = 'fixed' AND coalesce(f.fix_reachable, 0) = 1)"
            clauses.append(actionable_expr if actionable else "NOT " + actionable_expr)
        # Only constant SQL fragments are concatenated; every value is a bound parameter.
        sql = (
            "WITH scope AS ("
            + (_LATEST_SCOPE if run_id is None else _RUN_SCOPE)
            + ")"
            + _FINDINGS_SELECT
            + (" WHERE " + " AND ".join(clauses) if clauses else "")
            + _FINDINGS_ORDER
        )
        rows = self._conn().execute(sql, params)
        with gc_paused():
            return [
                FindingRecord(
                    finding=Finding.model_validate_json(doc),
                    risk=RiskAssessment.model_validate_json(risk) if risk is not None else None,
                    kev=bool(in_kev),
                )
                for doc, risk, in_kev in rows
            ]
