"""Compliance history: items per (host, advisory), their state changes, the scans applied.

:class:`ComplianceRepository` keeps what :mod:`patchpilot.app.compliance` decides (which item
opened, was fixed, became overdue...) and answers the queries it needs: the (run, host)
observations not yet applied, the items and their events, the installed deployments, the
breaches. The decisions themselves (due dates, states) are made in the app layer; this module
only stores them, each observation in one transaction and exactly once
(``compliance_scans``), whoever applies it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from patchpilot.core.store.base import StoreBase
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = [
    "ComplianceEvent",
    "ComplianceItem",
    "ComplianceRepository",
    "EventRow",
    "InstalledDeployment",
    "ItemUpdate",
    "NewItem",
    "Observation",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Observation(_Frozen):
    """One host seen (``ok``) or not (a failed discovery) by one scan or patch run."""

    run_id: str
    host: str
    at: datetime
    ok: bool


class ComplianceItem(_Frozen):
    """One episode of an item (host, source package, advisory), open or fixed."""

    id: int
    host: str
    source_package: str
    advisory_id: str
    cves: tuple[str, ...]
    binaries: tuple[str, ...]
    severity: str
    ssvc: str | None
    kev: bool
    first_seen: datetime
    opened_run: str
    due: date | None
    sla: str
    last_seen: datetime
    last_run: str
    candidate_run: str | None
    candidate_at: datetime | None
    fixed_at: datetime | None
    fixed_by: str | None
    confirmed_at: datetime | None
    confirmed_run: str | None

    @property
    def key(self) -> tuple[str, str, str]:
        """``(host, source_package, advisory_id)``."""
        return (self.host, self.source_package, self.advisory_id)


class ComplianceEvent(_Frozen):
    """One state change of an item."""

    id: int
    item: int
    at: datetime
    state: str
    run_id: str | None
    detail: str | None
    notified_at: datetime | None


class InstalledDeployment(_Frozen):
    """A host a (not dry) patch run finished on, and what it installed there."""

    run_id: str
    host: str
    finished_at: datetime
    packages: frozenset[str]
    """Binary packages whose item ended ``installed``."""
    sources: frozenset[str]
    """Their source packages, as the plan named them."""


@dataclass
class EventRow:
    """An event to record (``notified``: already announced, e.g. a back-filled breach)."""

    at: datetime
    state: str
    run_id: str | None = None
    detail: str | None = None
    notified: datetime | None = None


@dataclass
class NewItem:
    """An item a scan saw for the first time (or again, after it was fixed)."""

    host: str
    source_package: str
    advisory_id: str
    cves: tuple[str, ...]
    binaries: tuple[str, ...]
    severity: str
    ssvc: str | None
    kev: bool
    first_seen: datetime
    run_id: str
    due: date | None
    sla: str
    events: list[EventRow] = field(default_factory=list)


@dataclass
class ItemUpdate:
    """What changes on an open item; ``None`` fields stay as they are."""

    id: int
    seen: tuple[datetime, str] | None = None
    """(when, run) a scan saw it still open."""
    due: tuple[date, str] | None = None
    """A new (earlier) due date and its basis."""
    candidate: tuple[str, datetime] | None = None
    """(run, finished) a run installed its fix: confirmed by the next scan."""
    clear_candidate: bool = False
    fixed: tuple[datetime, str, datetime, str] | None = None
    """(fixed_at, fixed_by, confirmed_at, confirmed_run)."""
    events: list[EventRow] = field(default_factory=list)


_ITEM_COLUMNS: Final = (
    "id, host, source_package, advisory_id, cves, binaries, severity, ssvc, kev, first_seen,"
    " opened_run, due, sla, last_seen, last_run, candidate_run, candidate_at, fixed_at, fixed_by,"
    " confirmed_at, confirmed_run"
)

_PENDING: Final = """
    SELECT fs.run_id, fs.host, r.started_at, 1
    FROM finding_sets AS fs JOIN runs AS r ON r.run_id = fs.run_id
    WHERE NOT EXISTS (
            SELECT 1 FROM run_hosts AS h
            WHERE h.run_id = fs.run_id AND h.host = fs.host AND h.ok = 0)
      AND (r.finished_at IS NOT NULL
           OR EXISTS (SELECT 1 FROM risk AS k WHERE k.run_id = fs.run_id))
      AND NOT EXISTS (
            SELECT 1 FROM compliance_scans AS c WHERE c.run_id = fs.run_id AND c.host = fs.host)
    UNION ALL
    SELECT h.run_id, h.host, r.started_at, 0
    FROM run_hosts AS h JOIN runs AS r ON r.run_id = h.run_id
    WHERE h.ok = 0 AND r.kind IN ('scan', 'run')
      AND NOT EXISTS (
            SELECT 1 FROM compliance_scans AS c WHERE c.run_id = h.run_id AND c.host = h.host)
    ORDER BY 3, 1, 2
"""


def _time(text: str | None) -> datetime | None:
    return from_db_time(text) if text is not None else None


def _item(row: Sequence[Any]) -> ComplianceItem:
    return ComplianceItem(
        id=row[0],
        host=row[1],
        source_package=row[2],
        advisory_id=row[3],
        cves=tuple(json.loads(row[4])),
        binaries=tuple(json.loads(row[5])),
        severity=row[6],
        ssvc=row[7],
        kev=bool(row[8]),
        first_seen=from_db_time(row[9]),
        opened_run=row[10],
        due=date.fromisoformat(row[11]) if row[11] else None,
        sla=row[12],
        last_seen=from_db_time(row[13]),
        last_run=row[14],
        candidate_run=row[15],
        candidate_at=_time(row[16]),
        fixed_at=_time(row[17]),
        fixed_by=row[18],
        confirmed_at=_time(row[19]),
        confirmed_run=row[20],
    )


def _event(row: Sequence[Any]) -> ComplianceEvent:
    return ComplianceEvent(
        id=row[0],
        item=row[1],
        at=from_db_time(row[2]),
        state=row[3],
        run_id=row[4],
        detail=row[5],
        notified_at=_time(row[6]),
    )


def _insert_events(conn: sqlite3.Connection, item: int, events: Iterable[EventRow]) -> None:
    # (item, at, state) is unique: recording the same change twice (two processes applying
    # the clock at once) keeps one row.
    conn.executemany(
        "INSERT OR IGNORE INTO compliance_events (item, at, state, run_id, detail, notified_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                item,
                to_db_time(e.at),
                e.state,
                e.run_id,
                e.detail,
                to_db_time(e.notified) if e.notified else None,
            )
            for e in events
        ],
    )


class ComplianceRepository(StoreBase):
    """Compliance items, their events and the observations applied; part of ``Store``."""

    def compliance_pending(self) -> list[Observation]:
        """The (run, host) observations not yet applied, oldest first.

        A host a run assessed counts once the run's risk is saved (or the run finished); a
        host whose discovery failed counts as an observation that saw nothing. An
        observation's time is its run's start (when the host was looked at).
        """
        rows = self._conn().execute(_PENDING).fetchall()
        return [
            Observation(run_id=run_id, host=host, at=from_db_time(at), ok=bool(ok))
            for run_id, host, at, ok in rows
        ]

    def compliance_observed(self) -> dict[str, Observation]:
        """Each host's latest applied observation."""
        rows = self._conn().execute(
            "SELECT run_id, host, at, ok FROM ("
            " SELECT run_id, host, at, ok, row_number() OVER ("
            "  PARTITION BY host ORDER BY at DESC, run_id DESC) AS rn FROM compliance_scans"
            ") WHERE rn = 1"
        )
        return {
            host: Observation(run_id=run_id, host=host, at=from_db_time(at), ok=bool(ok))
            for run_id, host, at, ok in rows
        }

    def compliance_last_ok(self) -> dict[str, datetime]:
        """Each host's latest applied successful observation time."""
        rows = self._conn().execute(
            "SELECT host, max(at) FROM compliance_scans WHERE ok = 1 GROUP BY host"
        )
        return {host: from_db_time(at) for host, at in rows}

    def compliance_items(
        self, *, host: str | None = None, open_only: bool = False
    ) -> list[ComplianceItem]:
        """Items (every episode), by host, first seen, package and advisory."""
        # constant SQL only; the host is a bound parameter
        sql = (
            f"SELECT {_ITEM_COLUMNS} FROM compliance_items"  # noqa: S608
            " WHERE (:host IS NULL OR host = :host)"
        )
        if open_only:
            sql += " AND fixed_at IS NULL"
        sql += " ORDER BY host, first_seen, source_package, advisory_id, id"
        rows = self._conn().execute(sql, {"host": host}).fetchall()
        return [_item(row) for row in rows]

    def compliance_events(
        self,
        *,
        item: int | None = None,
        state: str | None = None,
        after: datetime | None = None,
        until: datetime | None = None,
    ) -> list[ComplianceEvent]:
        """Events by time: of one item, of one state, in ``(after, until]``."""
        rows = (
            self._conn()
            .execute(
                "SELECT id, item, at, state, run_id, detail, notified_at FROM compliance_events"
                " WHERE (:item IS NULL OR item = :item) AND (:state IS NULL OR state = :state)"
                " AND (:after IS NULL OR at > :after) AND (:until IS NULL OR at <= :until)"
                " ORDER BY at, id",
                {
                    "item": item,
                    "state": state,
                    "after": to_db_time(after) if after else None,
                    "until": to_db_time(until) if until else None,
                },
            )
            .fetchall()
        )
        return [_event(row) for row in rows]

    def compliance_open_events(self) -> dict[int, list[ComplianceEvent]]:
        """The events of every open item, by item (one query), each list by time."""
        rows = (
            self._conn()
            .execute(
                "SELECT e.id, e.item, e.at, e.state, e.run_id, e.detail, e.notified_at"
                " FROM compliance_events AS e JOIN compliance_items AS i ON i.id = e.item"
                " WHERE i.fixed_at IS NULL ORDER BY e.item, e.at, e.id"
            )
            .fetchall()
        )
        found: dict[int, list[ComplianceEvent]] = {}
        for row in rows:
            found.setdefault(row[1], []).append(_event(row))
        return found

    def installed_deployments(
        self, hosts: Iterable[str], since: datetime | None = None
    ) -> list[InstalledDeployment]:
        """Finished, not dry, deployments on ``hosts`` (since ``since``) that installed
        something, by finish time."""
        rows = (
            self._conn()
            .execute(
                "SELECT run_id, host, items, finished_at, result FROM run_deployments"
                " WHERE state = 'done' AND host IN (SELECT value FROM json_each(?))"
                " AND (? IS NULL OR finished_at >= ?) ORDER BY finished_at, run_id, host",
                (
                    json.dumps(sorted(set(hosts))),
                    to_db_time(since) if since else None,
                    to_db_time(since) if since else None,
                ),
            )
            .fetchall()
        )
        found: list[InstalledDeployment] = []
        for run_id, host, items, finished, result in rows:
            outcome = json.loads(result) if result else {}
            if not isinstance(outcome, dict) or outcome.get("dry_run"):
                continue
            installed = {
                str(i.get("package"))
                for i in outcome.get("items") or ()
                if isinstance(i, dict) and i.get("status") == "installed"
            }
            if not installed:
                continue
            planned = json.loads(items) if items else []
            sources = {
                str(p.get("source_package") or p.get("package"))
                for p in planned
                if isinstance(p, dict) and p.get("package") in installed
            }
            found.append(
                InstalledDeployment(
                    run_id=run_id,
                    host=host,
                    finished_at=from_db_time(finished),
                    packages=frozenset(installed),
                    sources=frozenset(sources),
                )
            )
        return found

    def compliance_apply(
        self,
        observation: Observation | None,
        new: Sequence[NewItem] = (),
        updates: Sequence[ItemUpdate] = (),
        *,
        applied_at: datetime,
    ) -> bool:
        """Record one observation's changes (or, without one, changes of the clock) at once.

        Returns:
            False (nothing written) when ``observation`` was applied already.
        """
        with self._transaction("apply compliance changes") as conn:
            if observation is not None:
                done = conn.execute(
                    "SELECT 1 FROM compliance_scans WHERE run_id = ? AND host = ?",
                    (observation.run_id, observation.host),
                ).fetchone()
                if done is not None:
                    return False
                conn.execute(
                    "INSERT INTO compliance_scans (run_id, host, at, ok, applied_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        observation.run_id,
                        observation.host,
                        to_db_time(observation.at),
                        int(observation.ok),
                        to_db_time(applied_at),
                    ),
                )
            for item in new:
                cursor = conn.execute(
                    "INSERT INTO compliance_items (host, source_package, advisory_id, cves,"
                    " binaries, severity, ssvc, kev, first_seen, opened_run, due, sla, last_seen,"
                    " last_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (
                        item.host,
                        item.source_package,
                        item.advisory_id,
                        json.dumps(list(item.cves)),
                        json.dumps(list(item.binaries)),
                        item.severity,
                        item.ssvc,
                        int(item.kev),
                        to_db_time(item.first_seen),
                        item.run_id,
                        item.due.isoformat() if item.due else None,
                        item.sla,
                        to_db_time(observation.at if observation else item.first_seen),
                        item.run_id,
                    ),
                )
                if cursor.rowcount and cursor.lastrowid is not None:
                    _insert_events(conn, cursor.lastrowid, item.events)
            for update in updates:
                self._update(conn, update)
        return True

    @staticmethod
    def _update(conn: sqlite3.Connection, update: ItemUpdate) -> None:
        still_open = conn.execute(
            "SELECT 1 FROM compliance_items WHERE id = ? AND fixed_at IS NULL", (update.id,)
        ).fetchone()
        if still_open is None:
            return
        if update.seen is not None:
            at, run_id = update.seen
            conn.execute(
                "UPDATE compliance_items SET last_seen = ?, last_run = ? WHERE id = ?",
                (to_db_time(at), run_id, update.id),
            )
        if update.due is not None:
            due, basis = update.due
            conn.execute(
                "UPDATE compliance_items SET due = ?, sla = ? WHERE id = ?",
                (due.isoformat(), basis, update.id),
            )
        if update.clear_candidate:
            conn.execute(
                "UPDATE compliance_items SET candidate_run = NULL, candidate_at = NULL"
                " WHERE id = ?",
                (update.id,),
            )
        if update.candidate is not None:
            run_id, at = update.candidate
            conn.execute(
                "UPDATE compliance_items SET candidate_run = ?, candidate_at = ? WHERE id = ?",
                (run_id, to_db_time(at), update.id),
            )
        if update.fixed is not None:
            fixed_at, fixed_by, confirmed_at, confirmed_run = update.fixed
            conn.execute(
                "UPDATE compliance_items SET fixed_at = ?, fixed_by = ?, confirmed_at = ?,"
                " confirmed_run = ? WHERE id = ?",
                (
                    to_db_time(fixed_at),
                    fixed_by,
                    to_db_time(confirmed_at),
                    confirmed_run,
                    update.id,
                ),
            )
        _insert_events(conn, update.id, update.events)

    def claim_compliance_breaches(self, now: datetime) -> list[ComplianceEvent]:
        """The ``overdue`` events up to ``now`` not announced yet, marked announced at ``now``
        (each is returned once, across threads and processes)."""
        with self._transaction("claim compliance breaches") as conn:
            rows = conn.execute(
                "SELECT id, item, at, state, run_id, detail, notified_at FROM compliance_events"
                " WHERE state = 'overdue' AND notified_at IS NULL AND at <= ? ORDER BY at, id",
                (to_db_time(now),),
            ).fetchall()
            conn.executemany(
                "UPDATE compliance_events SET notified_at = ? WHERE id = ?",
                [(to_db_time(now), row[0]) for row in rows],
            )
        return [_event(row) for row in rows]
