"""Applying one :class:`FeedBatch` inside the store's import transaction.

:class:`BatchImporter` does the writes; :meth:`patchpilot.core.store.Store.import_batch` owns the
transaction, so any exception here rolls the whole batch back.

Advisory records go through three paths:

* a new key: the record is the merged advisory; rows are buffered and written with
  ``executemany`` (ids are assigned here, which is safe because the import holds the write
  lock);
* a restated record (same identity and content, see :mod:`patchpilot.core.store.merge`): only its
  position in time moves; the merged advisory is recomputed only if the winner changes;
* anything else: the key's records are re-read and merged again.

Memory stays bounded whatever the size of the document: advisories, EPSS scores and KEV
entries are consumed one at a time (a large batch's records are a
:class:`~patchpilot.core.feeds.RecordStream` parsed from the file as they are imported) and written
in chunks of at most :attr:`BatchImporter.FLUSH_EVERY` / :attr:`BatchImporter.CHUNK` rows. A
stream that fails half way (the document changed since it was validated) raises, and the
caller's transaction rolls the whole import back.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, ClassVar, TypeVar

from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.feeds import FeedBatch
from patchpilot.core.models import CVE_RE, CVSS, Advisory, Ecosystem, FixStatus
from patchpilot.core.store.merge import (
    SourceRecord,
    merge_records,
    normalise,
    pick_winner,
    record_identity,
)
from patchpilot.core.store.records import StoreError
from patchpilot.core.store.schema import from_db_time, to_db_time
from patchpilot.core.versions import validate as validate_version

__all__ = ["BatchImporter", "ImportCounters", "read_source_records"]

_Key = tuple[str, str, str, str]


_T = TypeVar("_T")


def _chunks(rows: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


@dataclass(slots=True)
class ImportCounters:
    """What an import did so far (see :class:`patchpilot.core.store.ImportStats`)."""

    created: int = 0
    changed: int = 0
    fix_changed: int = 0
    unchanged: int = 0
    provenance_only: int = 0
    cvss: int = 0
    epss: int = 0
    kev: int = 0
    skipped: int = 0


@dataclass(slots=True)
class _Row:
    """The ranking columns of one stored record (enough to pick the winner, no JSON)."""

    id: int
    ecosystem: Ecosystem
    identity: tuple[str, str, str, str, str]
    seen_at: str
    import_id: int
    seq: int
    content: str

    @property
    def fixed_version(self) -> str | None:
        _, _, _, status, version = self.identity
        return version if status == FixStatus.FIXED.value else None

    @property
    def order(self) -> tuple[str, int, int]:
        return (self.seen_at, self.import_id, self.seq)


def content_hash(advisory: Advisory) -> str:
    """Digest of what a record says, ignoring when its provenance says it was fetched."""
    text = advisory.model_dump_json(exclude={"provenance": {"fetched_at"}})
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def read_source_records(conn: sqlite3.Connection, pk: int) -> list[SourceRecord]:
    """Every stored record of one advisory key, parsed.

    Args:
        conn: A connection (inside a transaction for a consistent read).
        pk: ``advisories.id`` of the key.

    Returns:
        The records with their positions and row ids.
    """
    return [
        SourceRecord(
            advisory=Advisory.model_validate_json(doc),
            seen_at=seen_at,
            import_id=import_id,
            seq=seq,
            row=row,
        )
        for row, seen_at, import_id, seq, doc in conn.execute(
            "SELECT id, seen_at, import_id, seq, doc FROM advisory_records WHERE advisory = ?",
            (pk,),
        )
    ]


@dataclass(slots=True)
class BatchImporter:
    """Writes one batch; the caller holds ``BEGIN IMMEDIATE`` and commits or rolls back.

    Attributes:
        conn: The transaction's connection.
        batch: The batch.
        feed_id: ``feeds.id`` of this import (its position among imports).
        counters: What was done.
    """

    FLUSH_EVERY: ClassVar[int] = 2000
    CHUNK: ClassVar[int] = 10_000

    conn: sqlite3.Connection
    batch: FeedBatch
    feed_id: int
    counters: ImportCounters = field(default_factory=ImportCounters)
    seen_at: str = ""
    _next_advisory: int = 0
    _next_record: int = 0
    _pending_keys: set[_Key] = field(default_factory=set)
    _touch_rows: list[tuple[str, int, int, int]] = field(default_factory=list)
    _fetched: datetime | None = None
    _advisory_rows: list[tuple[Any, ...]] = field(default_factory=list)
    _record_rows: list[tuple[Any, ...]] = field(default_factory=list)
    _cve_rows: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen_at = to_db_time(self.batch.fetched_at)
        max_advisory, max_record = self.conn.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM advisories),"
            " (SELECT coalesce(max(id), 0) FROM advisory_records)"
        ).fetchone()
        self._next_advisory = int(max_advisory) + 1
        self._next_record = int(max_record) + 1

    def run(self) -> ImportCounters:
        """Import everything in the batch.

        Returns:
            The counters.

        Raises:
            StoreError: For an invalid fixed version or a malformed CVE id.
            sqlite3.Error: If a statement fails.
        """
        for seq, advisory in enumerate(self.batch.advisories):
            self.add_advisory(seq, advisory)
        self.flush()
        self.import_cvss()
        self.import_epss()
        self.import_kev()
        if self.counters.created or self.counters.changed:
            self.conn.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'advisories_generation'"
            )
        return self.counters

    # ------------------------------------------------------------------ advisories

    def _prepare(self, advisory: Advisory) -> Advisory:
        fix = advisory.fix
        if fix.status is FixStatus.FIXED and fix.version is not None:
            try:
                validate_version(advisory.ecosystem, fix.version)
            except InvalidVersionError as exc:
                raise StoreError(
                    f"advisory {advisory.id} for {advisory.source_package} ({advisory.feed}): {exc}"
                ) from exc
        updates: dict[str, Any] = {}
        if advisory.release == "":
            updates["release"] = None
        if advisory.provenance.fetched_at is None:
            if self._fetched is None:
                self._fetched = from_db_time(self.seen_at)
            updates["provenance"] = advisory.provenance.model_copy(
                update={"fetched_at": self._fetched}
            )
        return advisory.model_copy(update=updates) if updates else advisory

    def add_advisory(self, seq: int, advisory: Advisory) -> None:
        """Record one advisory record and bring its key's merged advisory up to date.

        Args:
            seq: The record's index in the batch.
            advisory: The record.

        Raises:
            StoreError: For an invalid fixed version.
            sqlite3.Error: If a statement fails.
        """
        advisory = self._prepare(advisory)
        key: _Key = (
            advisory.ecosystem.value,
            advisory.release or "",
            advisory.source_package,
            advisory.id,
        )
        if key in self._pending_keys:
            self.flush()
        found = self.conn.execute(
            "SELECT a.id, a.winner, a.doc, r.id, r.feed, r.source, r.record_id, r.fix_status,"
            " r.fix_version, r.seen_at, r.import_id, r.seq, r.content"
            " FROM advisories AS a JOIN advisory_records AS r ON r.advisory = a.id"
            " WHERE a.ecosystem = ? AND a.release = ? AND a.source_package = ?"
            " AND a.advisory_id = ?",
            key,
        ).fetchall()
        if not found:
            self._create(key, seq, advisory)
            return
        pk, stored_winner, old_doc = found[0][:3]
        identity = record_identity(advisory)
        content = content_hash(advisory)
        order = (self.seen_at, self.feed_id, seq)
        rows = [
            _Row(rid, advisory.ecosystem, (feed, source, record_id, status, version), *rest)
            for _, _, _, rid, feed, source, record_id, status, version, *rest in found
        ]
        match = next((r for r in rows if r.identity == identity), None)
        content_changed = False
        if match is None:
            mine = self._new_record_id()
            self.conn.execute(
                "INSERT INTO advisory_records (id, advisory, feed, source, record_id,"
                " fix_status, fix_version, seen_at, import_id, seq, content, doc)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (mine, pk, *identity, *order, content, advisory.model_dump_json()),
            )
            rows.append(_Row(mine, advisory.ecosystem, identity, *order, content))
            content_changed = True
        else:
            mine = match.id
            if order > match.order:
                if match.content != content:
                    self.conn.execute(
                        "UPDATE advisory_records SET seen_at = ?, import_id = ?, seq = ?,"
                        " content = ?, doc = ? WHERE id = ?",
                        (*order, content, advisory.model_dump_json(), mine),
                    )
                    match.content = content
                    content_changed = True
                else:
                    # Written at the next flush (before this key is read again).
                    self._touch_rows.append((*order, mine))
                    self._pending_keys.add(key)
                match.seen_at, match.import_id, match.seq = order
        winner = pick_winner(rows)
        if winner.id != mine:
            self.counters.provenance_only += 1
        if not content_changed and winner.id == stored_winner:
            # Same statements, same winner: the merged advisory cannot have changed.
            self.counters.unchanged += 1
            self._maybe_flush()
            return
        self._remerge(pk, stored_winner, old_doc)

    def _new_record_id(self) -> int:
        rid = self._next_record
        self._next_record += 1
        return rid

    def _create(self, key: _Key, seq: int, advisory: Advisory) -> None:
        """A key seen for the first time: buffer its rows."""
        pk = self._next_advisory
        self._next_advisory += 1
        rid = self._new_record_id()
        doc = advisory.model_dump_json()
        merged = normalise(advisory)
        merged_doc = doc if merged is advisory else merged.model_dump_json()
        fix = merged.fix
        self._advisory_rows.append(
            (
                pk,
                *key,
                fix.status.value,
                fix.version,
                merged.severity.value,
                merged.feed,
                rid,
                merged_doc,
            )
        )
        self._record_rows.append(
            (
                rid,
                pk,
                *record_identity(advisory),
                self.seen_at,
                self.feed_id,
                seq,
                content_hash(advisory),
                doc,
            )
        )
        self._cve_rows.extend((pk, cve) for cve in merged.cves)
        self._pending_keys.add(key)
        self.counters.created += 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._advisory_rows) + len(self._touch_rows) >= self.FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write the buffered new keys and restatements."""
        if self._advisory_rows:
            self.conn.executemany(
                "INSERT INTO advisories (id, ecosystem, release, source_package, advisory_id,"
                " fix_status, fix_version, severity, feed, winner, doc)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self._advisory_rows,
            )
            self.conn.executemany(
                "INSERT INTO advisory_records (id, advisory, feed, source, record_id,"
                " fix_status, fix_version, seen_at, import_id, seq, content, doc)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self._record_rows,
            )
            self.conn.executemany(
                "INSERT INTO advisory_cves (advisory, cve) VALUES (?, ?)", self._cve_rows
            )
        if self._touch_rows:
            self.conn.executemany(
                "UPDATE advisory_records SET seen_at = ?, import_id = ?, seq = ? WHERE id = ?",
                self._touch_rows,
            )
        self._advisory_rows.clear()
        self._record_rows.clear()
        self._cve_rows.clear()
        self._touch_rows.clear()
        self._pending_keys.clear()

    def _remerge(self, pk: int, stored_winner: int, old_doc: str) -> None:
        """Merge every record of the key again and store the result if it changed."""
        self.flush()  # the key's records must be current in the database
        merged, winner = merge_records(read_source_records(self.conn, pk))
        new_doc = merged.model_dump_json()
        if new_doc == old_doc and winner.row == stored_winner:
            self.counters.unchanged += 1
            return
        self.conn.execute(
            "UPDATE advisories SET fix_status = ?, fix_version = ?, severity = ?, feed = ?,"
            " winner = ?, doc = ? WHERE id = ?",
            (
                merged.fix.status.value,
                merged.fix.version,
                merged.severity.value,
                merged.feed,
                winner.row,
                new_doc,
                pk,
            ),
        )
        if new_doc == old_doc:
            self.counters.unchanged += 1
            return
        old = Advisory.model_validate_json(old_doc)
        if set(old.cves) != set(merged.cves):
            self.conn.execute("DELETE FROM advisory_cves WHERE advisory = ?", (pk,))
            self.conn.executemany(
                "INSERT INTO advisory_cves (advisory, cve) VALUES (?, ?)",
                [(pk, cve) for cve in merged.cves],
            )
        self.counters.changed += 1
        if (old.fix.status, old.fix.version) != (merged.fix.status, merged.fix.version):
            self.counters.fix_changed += 1

    # ------------------------------------------------------------------ enrichment

    def _check_cve(self, cve: str) -> None:
        if not CVE_RE.match(cve):
            raise StoreError(f"{self.batch.kind.value} batch: not a CVE id: {cve!r}")

    def import_cvss(self) -> None:
        """Per CVE, a newer document's scores replace those of the same feed kind."""
        by_cve: dict[str, list[CVSS]] = {}
        for cve, score in self.batch.cvss:
            self._check_cve(cve)
            by_cve.setdefault(cve, []).append(score)
        kind = self.batch.kind.value
        for cve, scores in by_cve.items():
            (newest,) = self.conn.execute(
                "SELECT max(fetched_at) FROM cvss WHERE cve = ? AND kind = ?", (cve, kind)
            ).fetchone()
            if newest is not None and newest > self.seen_at:
                self.counters.skipped += 1
                continue
            self.conn.execute("DELETE FROM cvss WHERE cve = ? AND kind = ?", (cve, kind))
            self.conn.executemany(
                "INSERT OR REPLACE INTO cvss (cve, kind, version, source, vector, base_score,"
                " fetched_at, import_id, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        cve,
                        kind,
                        score.version,
                        score.source or "",
                        score.vector,
                        score.base_score,
                        self.seen_at,
                        self.feed_id,
                        score.model_dump_json(),
                    )
                    for score in scores
                ],
            )
            self.counters.cvss += 1

    def import_epss(self) -> None:
        """A score replaces the stored one unless that one has a newer ``score_date``."""

        def rows() -> Iterator[tuple[str, float, float, str, int]]:
            for cve, score in self.batch.epss:
                self._check_cve(cve)
                yield (
                    cve,
                    score.probability,
                    score.percentile,
                    score.score_date.isoformat(),
                    self.feed_id,
                )

        for chunk in _chunks(rows(), self.CHUNK):
            cursor = self.conn.executemany(
                "INSERT INTO epss (cve, probability, percentile, score_date, import_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (cve) DO UPDATE SET"
                " probability = excluded.probability, percentile = excluded.percentile,"
                " score_date = excluded.score_date, import_id = excluded.import_id"
                " WHERE excluded.score_date >= epss.score_date",
                chunk,
            )
            self.counters.epss += cursor.rowcount
            self.counters.skipped += len(chunk) - cursor.rowcount

    def import_kev(self) -> None:
        """An entry replaces the stored one unless that one came from a newer document."""

        def rows() -> Iterator[tuple[str, str, str, int | None, str, int]]:
            for cve, entry in self.batch.kev:
                self._check_cve(cve)
                ransomware = entry.known_ransomware_use
                yield (
                    cve,
                    entry.date_added.isoformat(),
                    entry.due_date.isoformat(),
                    None if ransomware is None else int(ransomware),
                    self.seen_at,
                    self.feed_id,
                )

        for chunk in _chunks(rows(), self.CHUNK):
            cursor = self.conn.executemany(
                "INSERT INTO kev (cve, date_added, due_date, known_ransomware_use, fetched_at,"
                " import_id) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (cve) DO UPDATE SET"
                " date_added = excluded.date_added, due_date = excluded.due_date,"
                " known_ransomware_use = excluded.known_ransomware_use,"
                " fetched_at = excluded.fetched_at, import_id = excluded.import_id"
                " WHERE excluded.fetched_at >= kev.fetched_at",
                chunk,
            )
            self.counters.kev += cursor.rowcount
            self.counters.skipped += len(chunk) - cursor.rowcount
